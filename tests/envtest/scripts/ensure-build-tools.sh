#!/usr/bin/env bash
# Makes sure the C build tools the workspace needs are present before cargo runs: the
# hub links jemalloc (tikv-jemalloc-sys), whose build runs `make` and a C compiler. A
# fresh machine has the Rust toolchain and gcc but not always make; installs what is
# missing from Debian's registry (needs root or passwordless sudo) and says so.
set -euo pipefail
missing=()
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "[vclink] installing build tools: ${missing[*]} (apt-get, needs root)" >&2
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  as_root apt-get update >/dev/null 2>&1 || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "[vclink] could not install ${missing[*]}; install them (e.g. apt-get install ${missing[*]}) and retry" >&2; exit 1; }
fi
