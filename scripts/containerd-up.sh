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
  log=/var/log/containerd-mcpcage.log
  echo "containerd-up: starting containerd (log: $log, root's only)"
  # containerd logs container ids, image names and errors that may quote
  # a user's paths: readable by root alone, whatever the umask.
  (umask 077 && touch "$log")
  chmod 600 "$log"
  nohup containerd >>"$log" 2>&1 &
fi
for _ in $(seq 100); do
  ctr --address "$sock" version >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "containerd-up: containerd did not answer on $sock; see /var/log/containerd-mcpcage.log" >&2
exit 1
