#!/usr/bin/env bash
# Provide what the chaos harness needs beyond the SQL servers, then print the environment it
# reads:
#
#   eval "$(hack/chaos-test-env.sh)"   # exports BERTH_TEST_LIBFAKETIME
#
# libfaketime (Debian package `faketime`) lets the harness run replicas with a skewed or
# faster/slower clock (LD_PRELOAD). Installed with apt-get when missing. Only `export …` lines
# go to stdout; progress goes to stderr. Exits non-zero with a message when it cannot be
# provided.
set -euo pipefail

say() { echo "[chaos-test-env] $*" >&2; }
die() { echo "chaos-test-env: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

find_lib() {
  local arch
  arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  for f in "/usr/lib/$arch/faketime/libfaketime.so.1" /usr/lib/faketime/libfaketime.so.1; do
    if [ -f "$f" ]; then echo "$f"; return 0; fi
  done
  return 1
}

lib=$(find_lib || true)
if [ -z "$lib" ]; then
  say "installing faketime (libfaketime) with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >&2 || die "apt-get update failed while installing faketime"
  as_root apt-get install -y -qq faketime >&2 || die "apt-get install faketime failed"
  lib=$(find_lib) || die "faketime is installed but libfaketime.so.1 was not found"
fi
say "libfaketime: $lib"
echo "export BERTH_TEST_LIBFAKETIME=$lib"
