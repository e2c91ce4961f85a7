#!/usr/bin/env bash
# Makes sure a containerd answers on /run/containerd/containerd.sock: starts
# the system service when systemd runs, otherwise containerd in the
# background with its log in /var/log/containerd-mcpcage.log.
set -euo pipefail
sock=/run/containerd/containerd.sock
if ctr --address "$sock" version >/dev/null 2>&1; then
  exit 0
fi
if [ -d /run/systemd/system ]; then
  systemctl start containerd
else
  echo "containerd-up: starting containerd (log: /var/log/containerd-mcpcage.log)"
  nohup containerd >>/var/log/containerd-mcpcage.log 2>&1 &
fi
for _ in $(seq 100); do
  ctr --address "$sock" version >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "containerd-up: containerd did not answer on $sock; see /var/log/containerd-mcpcage.log" >&2
exit 1
