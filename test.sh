#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, component tests against real
# kube-apiserver processes, and the end-to-end suite (hub + agents + Rancher simulator).
# First run: installs etcd/Go from Debian (needs root) and builds kube-apiserver (~5-10 min).
set -euo pipefail
cd "$(dirname "$0")"
bash tests/envtest/scripts/ensure-build-tools.sh
# The Kubernetes binaries first, outside the test runner's capture, so a first run's
# install and build show their steps (and a heartbeat) live; later runs find the cache.
bash tests/envtest/scripts/install-kube.sh >/dev/null
exec cargo test --workspace --no-fail-fast "$@"
