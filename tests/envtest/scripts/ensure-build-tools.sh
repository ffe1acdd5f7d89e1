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
# apt's own progress, one line per package fetched and set up.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" 2>&1 \
    | { grep --line-buffered -E '^(Get:|Setting up )' || true; } | sed -u 's/^/[vclink]   /' >&2
}
if ! apt_install "${missing[@]}"; then
  echo "[vclink] apt-get update" >&2
  as_root apt-get update >/dev/null 2>&1 || true
  apt_install "${missing[@]}" \
    || { echo "[vclink] could not install ${missing[*]}; install them (e.g. apt-get install ${missing[*]}) and retry" >&2; exit 1; }
fi
for tool in make cc; do
  if command -v "$tool" >/dev/null; then echo "[vclink] installed $tool: $(command -v "$tool")" >&2; fi
done
