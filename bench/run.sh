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
# Each: the benchmarks to run, then the flags and the package. The eBPF
# loops time themselves (one iteration each); moving a call epoch is timed
# over many.
for b in ". -benchtime 20000x ./daemon/audit" ". -benchtime 2000x ./daemon/relay" ". -benchtime 500x ./integration" \
  "SyscallOverhead|EventPipeline -benchtime 1x ./bpf" "NewCall -benchtime 200000x ./bpf"; do
  # shellcheck disable=SC2086 # $b is the pattern, then the flags and the package
  set -- $b
  pattern=$1
  shift
  echo "+ go test -run '^\$' -bench '$pattern' $*"
  $GO test -run '^$' -bench "$pattern" "$@" 2>&1 | tee -a "$gobench"
done
{
  echo
  echo "## Go benchmarks (go test -bench, same run)"
  echo
  echo '```'
  grep -E '^(cpu:|pkg:|Benchmark|ok |FAIL|--- FAIL)' "$gobench"
  echo '```'
} >>"$out"
$GO run ./bench/cmd/mcpbench -kernel-targets "$gobench" -out "$out"
echo "bench: results in $out"
