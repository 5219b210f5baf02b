# Developer shortcuts. `just --list` shows them; each is one plain command you can also run by hand.

# Format the workspace.
fmt:
    cargo fmt --all

# Lints as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Fast tests: no services needed (integration tests say that they skipped).
test:
    cargo test --workspace

# Everything, with PostgreSQL, MariaDB and a kube-apiserver provisioned (what CI runs).
test-all:
    bash hack/test-all.sh

# Run a development API server (in-memory store, self-signed TLS, no auth).
dev:
    cargo run -p berth-apiserver -- --dev
