#!/usr/bin/env bash
# Installs etcd and builds kube-apiserver + kube-controller-manager from Debian's
# `kubernetes` source package (see docs/testenv.md), caching the binaries in
# $VCLINK_KUBE_CACHE (default ~/.cache/vclink/kube) keyed by package version and patch.
#
# Idempotent; safe to run concurrently (flock). Prints one line per step on stderr so a
# user sees progress, and while a long step runs a heartbeat line every
# $VCLINK_HEARTBEAT_SECONDS (default 30) with the elapsed time and the step's last log
# line; on failure names the step and how to retry. stdout is only the binaries' folder.
set -euo pipefail

CACHE_ROOT="${VCLINK_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vclink/kube}"
PATCH_REV="reflect2-go118-v1"
mkdir -p "$CACHE_ROOT"
HEARTBEAT="${VCLINK_HEARTBEAT_SECONDS:-30}"
step() { echo "[vclink envtest] $*" >&2; }
# 270 -> 4m30s
human() { if [ "$1" -ge 60 ]; then echo "$(($1 / 60))m$(($1 % 60))s"; else echo "$1s"; fi; }
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
  step "waiting for another install/build of the Kubernetes binaries to finish (lock: $CACHE_ROOT/.lock)"
  waited=0
  until flock -w "$HEARTBEAT" 9; do
    waited=$((waited + HEARTBEAT))
    step "still waiting for the other build ($(human "$waited"); its log: $CACHE_ROOT/install.log)"
  done
fi
fail() { echo "[vclink envtest] FAILED at step: $CURRENT_STEP. $*" >&2
         echo "[vclink envtest] retry with: bash $0   (log: $LOG)" >&2; exit 1; }
LOG="$CACHE_ROOT/install.log"
# Runs a command into the log (in the foreground, so Ctrl-C stops it); meanwhile a
# background loop says every $HEARTBEAT s that the step still runs. The loop ends with
# the command, or on its own when this script is gone.
heartbeat() {
  local parent=$1 started=$SECONDS next=$((SECONDS + HEARTBEAT)) last
  while sleep 1; do
    kill -0 "$parent" 2>/dev/null || exit 0
    if [ "$SECONDS" -ge "$next" ]; then
      last="$(tail -n 1 "$LOG" 2>/dev/null | tr -d '\r' | cut -c1-100)"
      step "still running: $CURRENT_STEP ($(human $((SECONDS - started))))${last:+ -- last log line: $last}"
      next=$((next + HEARTBEAT))
    fi
  done
}
run() {
  heartbeat "$$" &
  local hb=$! rc=0
  "$@" >>"$LOG" 2>&1 || rc=$?
  kill "$hb" 2>/dev/null || true
  wait "$hb" 2>/dev/null || true
  [ "$rc" -eq 0 ] || fail "command failed (exit $rc): $*"
}
CURRENT_STEP="start"
trap 'fail "unexpected error (exit $?)"' ERR

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# Cheap path first: a cached build for this patch revision and the package version apt
# knows about (no root, no network). Falls back to the newest cached build when apt has
# no deb-src entries (e.g. the cache was copied from another machine).
# `|| true`: apt-cache exits 100 when no deb-src entry exists yet (a fresh machine);
# that means "unknown", not a failure.
src_version() { { apt-cache showsrc kubernetes 2>/dev/null || true; } | awk '/^Version:/{print $2; exit}'; }
cached_bin() {
  local v="$1" out
  out="$CACHE_ROOT/${v//[^A-Za-z0-9.+_-]/_}-$PATCH_REV"
  [ -x "$out/bin/kube-apiserver" ] && [ -x "$out/bin/kube-controller-manager" ] && echo "$out/bin"
}
install_pkgs() {
  [ $# -gt 0 ] || return 0
  CURRENT_STEP="apt-get install $* (needs root)"
  step "$CURRENT_STEP"
  if [ -z "${APT_UPDATED-}" ]; then run as_root apt-get update; APT_UPDATED=1; fi
  run as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
ensure_etcd() { command -v etcd >/dev/null || install_pkgs etcd-server; }

CURRENT_STEP="look up cached binaries"
VERSION="$(src_version)"
if [ -n "$VERSION" ] && BIN="$(cached_bin "$VERSION")"; then
  ensure_etcd; echo "$BIN"; exit 0
fi
if [ -z "$VERSION" ]; then
  BIN="$(ls -1dt "$CACHE_ROOT"/*-"$PATCH_REV"/bin 2>/dev/null | head -1 || true)"
  if [ -n "$BIN" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
    ensure_etcd; echo "$BIN"; exit 0
  fi
fi

# Building: tools, then the source package.
: >"$LOG"
need_pkgs=()
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v go >/dev/null || need_pkgs+=(golang-go)
command -v rsync >/dev/null || need_pkgs+=(rsync)
command -v make >/dev/null || need_pkgs+=(make)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v dpkg-source >/dev/null || need_pkgs+=(dpkg-dev)

if [ ! -f /etc/apt/sources.list.d/debian-src.sources ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  CURRENT_STEP="enable deb-src (needs root)"
  step "$CURRENT_STEP"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    | as_root tee /etc/apt/sources.list.d/debian-src.sources >/dev/null || fail "cannot write apt sources; run as root"
  CURRENT_STEP="apt-get update"
  step "$CURRENT_STEP"
  run as_root apt-get update
  APT_UPDATED=1
fi
install_pkgs "${need_pkgs[@]}"

CURRENT_STEP="resolve kubernetes source version"
VERSION="$(src_version)"
if [ -z "$VERSION" ] && [ -z "${APT_UPDATED-}" ]; then
  run as_root apt-get update
  VERSION="$(src_version)"
fi
[ -n "$VERSION" ] || fail "apt-cache showsrc kubernetes found nothing; is deb-src enabled?"
KEY="${VERSION//[^A-Za-z0-9.+_-]/_}-$PATCH_REV"
OUT="$CACHE_ROOT/$KEY"
if BIN="$(cached_bin "$VERSION")"; then
  echo "$BIN"
  exit 0
fi

BUILD="$CACHE_ROOT/build-$KEY"
rm -rf "$BUILD"; mkdir -p "$BUILD"
CURRENT_STEP="apt-get source kubernetes=$VERSION (~34 MB)"
step "$CURRENT_STEP"
(cd "$BUILD" && run apt-get source --only-source "kubernetes=$VERSION")
SRC="$(find "$BUILD" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -1)"
[ -n "$SRC" ] || fail "unpacked source directory not found"

CURRENT_STEP="patch vendored reflect2 for Go >= 1.18"
step "$CURRENT_STEP"
R="$SRC/vendor/github.com/modern-go/reflect2"
python3 - "$R" >>"$LOG" 2>&1 <<'PY' || fail "patch did not apply"
import re, sys, pathlib
d = pathlib.Path(sys.argv[1])
link = d / "unsafe_link.go"
t = link.read_text()
if "checkBucket" not in t:
    t = re.sub(r"func mapiterinit\(rtype unsafe\.Pointer, m unsafe\.Pointer\) \*hiter",
               "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)", t)
    t = re.sub(r"type hiter struct \{.*?\n\}", """type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}""", t, flags=re.S)
    assert "it *hiter)" in t and "checkBucket" in t, "unsafe_link.go shape unexpected"
    link.write_text(t)
m = d / "unsafe_map.go"
t = m.read_text()
if "var it hiter" not in t:
    new, n = re.subn(r"return &UnsafeMapIterator\{\s*hiter:\s*mapiterinit\(type2\.rtype, \*\(\*unsafe\.Pointer\)\(obj\)\),",
                     "var it hiter\n\tmapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)\n\treturn &UnsafeMapIterator{\n\t\thiter:      &it,", t)
    assert n == 1, "unsafe_map.go shape unexpected"
    m.write_text(new)
print("patched")
PY

CURRENT_STEP="building kube-apiserver + kube-controller-manager (go build, ~6-10 min on 2 cores)"
step "$CURRENT_STEP"
(
  cd "$SRC"
  export GOPATH="$SRC/.go" GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GOCACHE="$BUILD/.gocache"
  mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
  run make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
)
CURRENT_STEP="install into cache"
mkdir -p "$OUT.tmp/bin"
cp "$SRC"/_output/local/bin/linux/*/kube-apiserver "$SRC"/_output/local/bin/linux/*/kube-controller-manager "$OUT.tmp/bin/"
echo "$VERSION $PATCH_REV" >"$OUT.tmp/VERSION"
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
rm -rf "$BUILD"
step "kube binaries ready in $OUT/bin"
echo "$OUT/bin"
