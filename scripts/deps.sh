#!/usr/bin/env bash
# Installs what mcpcage's build, run and tests need and is missing, as root
# on Debian: containerd, runc, ctr (package containerd), clang, llvm and
# libbpf-dev (eBPF objects), prometheus (promtool, rule tests), uidmap
# (newuidmap, subordinate uid tests), Node.js and the official MCP reference servers
# from npm. Without root it only reports.
set -euo pipefail

missing_pkgs=()
command -v containerd >/dev/null || missing_pkgs+=(containerd)
command -v runc >/dev/null || missing_pkgs+=(runc)
command -v node >/dev/null || missing_pkgs+=(nodejs)
command -v npm >/dev/null || missing_pkgs+=(npm)
# make generate: clang builds the eBPF objects against libbpf's headers.
command -v clang >/dev/null || missing_pkgs+=(clang)
command -v llvm-strip >/dev/null || missing_pkgs+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing_pkgs+=(libbpf-dev)
# Tests load the alert rules with promtool and run a real Prometheus.
command -v promtool >/dev/null || missing_pkgs+=(prometheus)
# Package checks read the .rpm with rpm; the unit tests use systemd-analyze.
command -v rpm >/dev/null || missing_pkgs+=(rpm)
command -v systemd-analyze >/dev/null || missing_pkgs+=(systemd)
# The package test boots a Debian tree with systemd-nspawn.
command -v debootstrap >/dev/null || missing_pkgs+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing_pkgs+=(systemd-container)
# Agent identity tests run lua and ruby agents (code those interpreters
# load before the script).
command -v lua5.4 >/dev/null || missing_pkgs+=(lua5.4)
command -v ruby >/dev/null || missing_pkgs+=(ruby)
# A Java MCP client (its JDK spawns every child through jspawnhelper).
command -v javac >/dev/null || missing_pkgs+=(default-jdk-headless)
# Python servers and agents (Debian's: PyPI is not reachable).
[ -x /usr/bin/python3 ] || missing_pkgs+=(python3)
# A user acting as its subordinate uids (/etc/subuid) through a user
# namespace: unshare --map-users runs newuidmap.
command -v newuidmap >/dev/null || missing_pkgs+=(uidmap)

missing_npm=()
command -v mcp-server-everything >/dev/null || missing_npm+=(@modelcontextprotocol/server-everything)
command -v mcp-server-filesystem >/dev/null || missing_npm+=(@modelcontextprotocol/server-filesystem)

if [ "$(id -u)" != 0 ] && [ $((${#missing_pkgs[@]} + ${#missing_npm[@]})) -gt 0 ]; then
  echo "deps: missing ${missing_pkgs[*]} ${missing_npm[*]}; run as root to install them (integration tests skip without them)" >&2
  missing_pkgs=() missing_npm=()
fi
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  echo "deps: installing ${missing_pkgs[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi
if [ ${#missing_npm[@]} -gt 0 ]; then
  echo "deps: installing ${missing_npm[*]} with npm"
  npm install -g --no-fund --no-audit --loglevel=error "${missing_npm[@]}"
fi

# The official TypeScript SDK client the consent tests use as an agent.
if [ ! -d testdata/tsclient/node_modules/@modelcontextprotocol/sdk ] && command -v npm >/dev/null; then
  echo "deps: installing the MCP TypeScript SDK for testdata/tsclient"
  (cd testdata/tsclient && npm ci --no-fund --no-audit --loglevel=error)
fi
if [ ! -d testdata/appserver/node_modules/@modelcontextprotocol/ext-apps ] && command -v npm >/dev/null; then
  echo "deps: installing the MCP TypeScript and ext-apps SDKs for testdata/appserver"
  (cd testdata/appserver && npm ci --no-fund --no-audit --loglevel=error)
fi
