#!/usr/bin/env bash
# Provide the test OpenID provider (tests/oidc-provider, on the npm package `oidc-provider`) for
# Berth's OIDC tests, then print the environment the tests read:
#
#   eval "$(hack/oidc-test-env.sh)"     # exports BERTH_TEST_OIDC_PROVIDER_DIR
#   hack/oidc-test-env.sh -- cargo test -p berth-oidc-broker   # runs a command with it set
#
# Installs Node.js and npm with apt-get when missing (oidc-provider needs Node >= 20.19), then
# runs `npm ci` from the committed package-lock.json into a cache directory keyed by the lock
# file's hash, ~/.cache/berth/oidc-provider/<sha256>, with the server script copied beside
# node_modules. A finished cache directory is reused as is. Only `export …` lines go to stdout;
# progress goes to stderr.
#
# Environment: BERTH_OIDC_CACHE_DIR (~/.cache/berth/oidc-provider).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$HERE/tests/oidc-provider
CACHE_ROOT=${BERTH_OIDC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/oidc-provider}
CMD=()
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; CMD=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

say() { echo "[oidc-test-env] $*" >&2; }
die() { echo "oidc-test-env: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'
}

if ! node_ok; then
  say "installing nodejs and npm with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >&2 || die "apt-get update failed"
  as_root apt-get install -y -qq nodejs npm >&2 || die "apt-get install nodejs npm failed"
  node_ok || die "node $(node --version 2>/dev/null || echo missing) is too old: oidc-provider needs >= 20.19"
fi

HASH=$(cat "$SRC/package-lock.json" "$SRC/server.mjs" | sha256sum | cut -c1-16)
DIR=$CACHE_ROOT/$HASH
if [ ! -f "$DIR/.complete" ]; then
  say "npm ci into $DIR"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/server.mjs" "$DIR/"
  (cd "$DIR" && npm ci --no-audit --no-fund --ignore-scripts >&2) || die "npm ci failed in $DIR"
  touch "$DIR/.complete"
else
  say "using $DIR"
fi

if [ ${#CMD[@]} -gt 0 ]; then
  export BERTH_TEST_OIDC_PROVIDER_DIR=$DIR
  exec "${CMD[@]}"
fi
echo "export BERTH_TEST_OIDC_PROVIDER_DIR=$DIR"
