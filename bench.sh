#!/usr/bin/env bash
# vclink benchmarks. Builds the release binaries (the shipped profile) and runs
# vclink-bench against real kube-apiservers; results go to target/bench/results.json and
# target/bench/results.txt (and are printed). Arguments are passed to vclink-bench, e.g.
#   ./bench.sh                                # 200 agents × 5,000 vClusters (a few minutes)
#   ./bench.sh --full                         # 2,000 agents × 50,000 vClusters (~30 min): 49,000 of them
#                                             # pre-populated by the bulk stand-in, 1,000 through the hub
#   ./bench.sh --hostile                      # hostile clients vs. the hub (~4 min, loopback)
#   ./bench.sh --faults                       # fault report: case → outcome, "N passed, M failed"
# Every mode ends with the hub restarted (kill -9) at its scale unless --no-restart, and
# aborts by itself past --abort-minutes (15).
#   ./bench.sh --agents 50 --vclusters 1000 --in-flight 200 --idle-seconds 30
#   ./bench.sh --help
# The first run on a machine may build kube-apiserver from source (see docs/testenv.md).
set -euo pipefail
cd "$(dirname "$0")"
bash tests/envtest/scripts/ensure-build-tools.sh
# The product, exactly as released (opt-level=z, fat LTO).
cargo build --release --bins -p vclink-hub -p vclink-agent
# The load generator only needs to be fast, not small: skip fat LTO to save build time.
CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_OPT_LEVEL=2 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --release -p vclink-bench
mkdir -p target/bench
# Enough descriptors for thousands of agent streams on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
VCLINK_BIN_DIR="$PWD/target/release" target/release/vclink-bench --out target/bench "$@"
if [[ -f target/bench/binary-size.txt ]]; then
  echo "binary sizes from tests/packaging/scripts/check-image.sh:"
  cat target/bench/binary-size.txt
fi
