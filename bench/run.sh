#!/usr/bin/env bash
# `make bench`: the side-by-side harness (bench/cmd/mcpbench, which prints
# its table and writes bench/results.md), then the Go benchmarks of the
# audit log, the relay, the integration round trip and the eBPF layer,
# whose summary lines are appended to bench/results.md. Root; after
# `make deps build`.
# Extra arguments go to mcpbench (e.g. -rounds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
if [ "$(id -u)" != 0 ]; then
  echo "make bench needs root (containerd, runc, eBPF)" >&2
  exit 1
fi
./bench/deps.sh

out=bench/results.md
$GO run ./bench/cmd/mcpbench -out "$out" "$@"

gobench=$(mktemp)
trap 'rm -f "$gobench"' EXIT
for b in "-benchtime 20000x ./daemon/audit" "-benchtime 2000x ./daemon/relay" "-benchtime 500x ./integration" "-benchtime 1x ./bpf"; do
  echo "+ go test -run '^\$' -bench . $b"
  # shellcheck disable=SC2086 # $b is the flags and the package
  $GO test -run '^$' -bench . $b 2>&1 | tee -a "$gobench"
done
{
  echo
  echo "## Go benchmarks (go test -bench, same run)"
  echo
  echo '```'
  grep -E '^(cpu:|pkg:|Benchmark|ok |FAIL|--- FAIL)' "$gobench"
  echo '```'
} >>"$out"
echo "bench: results in $out"
