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
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  systemctl enable mcpcaged.socket mcpcaged.service >/dev/null 2>&1 || true
  systemctl start mcpcaged.socket || true
  # An upgrade restarts a running daemon onto the new binary.
  systemctl try-restart mcpcaged.service || true
fi
exit 0
