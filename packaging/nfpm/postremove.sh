#!/bin/sh
# After removal. Audit logs (/var/log/mcpcage) and state (/var/lib/mcpcage:
# consents, secrets) are kept: they are records, not caches. `purge`
# removes the configuration only (dpkg does so for the conffile).
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
