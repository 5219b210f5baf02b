#!/usr/bin/env bash
# Provide real Kubernetes control-plane binaries for Berth's tests: kube-apiserver and
# kube-controller-manager v1.20.2 built from Debian bookworm's `kubernetes` source package with
# Debian's Go 1.19, and etcd 3.4.23 from Debian's `etcd-server` package (hack/kube/build-kube-apiserver.sh).
# Built once, cached under ${XDG_CACHE_HOME:-~/.cache}/berth/kube-1.20.2/ keyed by version
# (cold: about 7 minutes on 2 cores; cached: well under a second).
#
# Usage:
#   eval "$(hack/kube-test-env.sh)"            # exports BERTH_TEST_KUBE_BIN_DIR
#   hack/kube-test-env.sh -- cargo test -p berth-store-k8s   # runs a command with it set
#   hack/kube-test-env.sh --keep-work-dir ...   # keep the 2.3 GB build dir for quick rebuilds
#
# Tests then start their own clusters through the berth-e2e harness (tests/e2e): etcd +
# kube-apiserver (+ kube-controller-manager) on free loopback ports, one per TestCluster.
# Environment: KAPI_CACHE_DIR, KAPI_WORK_DIR, DEBIAN_MIRROR, KUBERNETES_DEB_VERSION (see the
# build script).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLEAN=(--clean)
CMD=()
while [ $# -gt 0 ]; do
  case $1 in
    --keep-work-dir) CLEAN=(); shift ;;
    --) shift; CMD=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

BIN_DIR=$("$HERE/kube/build-kube-apiserver.sh" --controller-manager "${CLEAN[@]}" | tail -n1)
for b in kube-apiserver kube-controller-manager etcd; do
  [ -x "$BIN_DIR/$b" ] || { echo "kube-test-env: $BIN_DIR/$b missing after build" >&2; exit 1; }
done
echo "[kube-test-env] BERTH_TEST_KUBE_BIN_DIR=$BIN_DIR" >&2

if [ ${#CMD[@]} -gt 0 ]; then
  export BERTH_TEST_KUBE_BIN_DIR=$BIN_DIR
  exec "${CMD[@]}"
fi
printf 'export BERTH_TEST_KUBE_BIN_DIR=%q\n' "$BIN_DIR"
