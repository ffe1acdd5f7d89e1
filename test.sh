#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, component tests against real
# kube-apiserver processes, and the end-to-end suite (hub + agents + Rancher simulator).
# First run: installs etcd/Go from Debian (needs root) and builds kube-apiserver (~5-10 min).
set -euo pipefail
cd "$(dirname "$0")"
bash tests/envtest/scripts/ensure-build-tools.sh
exec cargo test --workspace --no-fail-fast "$@"
