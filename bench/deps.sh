#!/usr/bin/env bash
# Installs what `make bench` needs beyond `make deps`, as root on Debian:
# bubblewrap, socat and ripgrep (what Anthropic's sandbox-runtime runs on
# Linux) from apt, and @anthropic-ai/sandbox-runtime (the peer sandbox,
# pinned in bench/package.json) from npm into bench/_deps/node_modules
# (the leading underscore keeps the go tool out of it).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v socat >/dev/null || missing+=(socat)
command -v rg >/dev/null || missing+=(ripgrep)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bench deps: missing ${missing[*]}; run as root" >&2
    exit 1
  fi
  echo "bench deps: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x _deps/node_modules/.bin/srt ] || ! cmp -s package.json _deps/package.json; then
  echo "bench deps: installing the sandbox-runtime with npm into bench/_deps"
  mkdir -p _deps
  cp package.json _deps/package.json
  [ -f package-lock.json ] && cp package-lock.json _deps/package-lock.json
  (cd _deps && if [ -f package-lock.json ]; then npm ci --no-fund --no-audit --loglevel=error; \
    else npm install --no-fund --no-audit --loglevel=error; fi)
  [ -f package-lock.json ] || cp _deps/package-lock.json package-lock.json
fi
