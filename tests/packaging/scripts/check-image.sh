#!/usr/bin/env bash
# Checks what the Dockerfile promises without a Docker engine: builds the release binaries
# exactly as its build stage does, checks that every /usr/local/bin path the Dockerfile,
# the charts and the agent's Job use exists in that build and answers --help (the agent
# also for `run` and `register`), and reports the binaries' sizes in
# target/bench/binary-size.txt.
#
# Usage: tests/packaging/scripts/check-image.sh [--no-build]
#   The release build (opt-level z, fat LTO, one codegen unit) takes several minutes on
#   two cores the first time; cargo rebuilds only what changed afterwards. --no-build
#   checks the release binaries already in target/release (seconds).
#   Also run by: cargo test -p vclink-packaging-tests --test image -- --ignored
set -euo pipefail
cd "$(dirname "$0")/../../.."
if [[ "${1:-}" != "--no-build" ]]; then
  cargo build --release --locked --bins -p vclink-hub -p vclink-agent
fi
grep -q 'ENTRYPOINT \["/usr/local/bin/vclink-hub"\]' Dockerfile \
  || { echo "Dockerfile ENTRYPOINT is not /usr/local/bin/vclink-hub" >&2; exit 1; }
mkdir -p target/bench
out=target/bench/binary-size.txt
: > "$out.tmp"
for path in $(grep -oE '/usr/local/bin/vclink-[a-z]+' Dockerfile | sort -u); do
  bin="target/release/$(basename "$path")"
  [[ -x "$bin" ]] || { echo "Dockerfile names $path but the release build has no $bin" >&2; exit 1; }
  "$bin" --help | grep -q "Usage:" || { echo "$bin --help printed no usage" >&2; exit 1; }
  printf '%s\t%s bytes\t%s\n' "$(basename "$path")" "$(stat -c %s "$bin")" "$(numfmt --to=iec "$(stat -c %s "$bin")")" >> "$out.tmp"
done
for sub in run register; do
  target/release/vclink-agent "$sub" --help | grep -q "Usage:" || { echo "vclink-agent $sub --help failed" >&2; exit 1; }
done
mv "$out.tmp" "$out"
echo "release binaries (profile.release: opt-level=z, lto=fat, strip):"
cat "$out"
