#!/usr/bin/env bash
# Runs the vclink demo: real kube-apiservers (Rancher's local cluster, one downstream
# cluster, one API server per vCluster), the Rancher simulator, and vclink's hub and
# agent as real processes. Creates two vClusters and shows them being imported.
# First run: installs etcd/Go from Debian (needs root) and builds kube-apiserver (~5-10 min).
set -euo pipefail
cd "$(dirname "$0")"
bash tests/envtest/scripts/ensure-build-tools.sh
# Live progress of a first run's kube-apiserver build (with a heartbeat); cached after.
bash tests/envtest/scripts/install-kube.sh >/dev/null
echo "== building vclink (hub, agent, demo)"
cargo build --workspace --bins --quiet
exec target/debug/vclink-demo "$@"
