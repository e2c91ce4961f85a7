#!/bin/sh
# After removal. Audit logs (/var/log/mcpcage) and state (/var/lib/mcpcage:
# consents, secrets, sign-in tokens, signing keys) are kept: they are
# records, not caches. `purge` removes the configuration only (dpkg does so
# for the conffile), and says what it keeps.
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
case "$1" in
  remove|purge|0)
    # The exec and fork stampers stay attached across daemon restarts
    # (pinned in the BPF file system); with the package gone nothing reads
    # them, and they would go on copying what every exec on the host is
    # given until the next boot. Removing the pins detaches them (a
    # daemon still running from elsewhere keeps its own links).
    for d in /sys/fs/bpf/mcpcage/exec-v*; do
      [ -e "$d" ] && rm -rf "$d" 2>/dev/null || true
    done
    ;;
esac
if [ "$1" = purge ] && [ -d /var/lib/mcpcage ]; then
  echo "mcpcage: kept /var/lib/mcpcage (consents, secret stores in plain text, sign-in tokens, signing keys) and /var/log/mcpcage (audit logs): remove them yourself once they are no longer needed" >&2
fi
exit 0
