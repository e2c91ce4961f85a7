#!/bin/sh
# Before removal (not upgrade): stop and disable the daemon and its socket.
set -e
case "$1" in
  remove|purge|0)
    if [ -d /run/systemd/system ]; then
      systemctl disable --now mcpcaged.service mcpcaged.socket >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
