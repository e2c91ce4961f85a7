#!/bin/sh
# After install or upgrade: the group, the directories, the socket.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers mcpcage.conf || true
elif ! getent group mcpcage >/dev/null; then
  groupadd --system mcpcage || true
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
  systemd-tmpfiles --create mcpcage.conf || true
fi
# First install: deb "configure" with no old version, rpm 1. An upgrade
# keeps what the administrator chose (a socket disabled stays disabled).
first=no
case "$1" in
  configure) [ -z "$2" ] && first=yes ;;
  1) first=yes ;;
esac
# Removed while enabled, now installed again (see preremove.sh).
if [ -e /var/lib/mcpcage/.enable-on-install ]; then
  first=yes
  rm -f /var/lib/mcpcage/.enable-on-install
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  if [ "$first" = yes ]; then
    systemctl enable mcpcaged.socket mcpcaged.service >/dev/null 2>&1 || true
    systemctl start mcpcaged.socket || true
  fi
  # An upgrade restarts a running daemon onto the new binary (its sessions
  # end; their clients start them again).
  systemctl try-restart mcpcaged.service || true
fi
exit 0
