#!/bin/sh
# Before removal (not upgrade): stop and disable the daemon and its socket.
set -e
case "$1" in
  remove|purge|0)
    if [ -d /run/systemd/system ]; then
      # Installed again later (dpkg: "configure OLD-VERSION" from the
      # config-files state), the socket is enabled again only if it was.
      if systemctl is-enabled --quiet mcpcaged.socket 2>/dev/null && [ -d /var/lib/mcpcage ]; then
        touch /var/lib/mcpcage/.enable-on-install || true
      fi
      systemctl disable --now mcpcaged.service mcpcaged.socket >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
