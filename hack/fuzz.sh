#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and fails on any crash.
#
#   hack/fuzz.sh [SECONDS]      # SECONDS per target, default 20
#
# Targets: request_decode (the lease handlers' body extractors), lease_key (key and holder
# validation), static_keys (the API key file parser), sql_dsn (SQL DSN parsing and redaction).
# The toolchain is stable only: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its -Z flags, and
# `--sanitizer none` needs no sanitizer runtime (the code under test forbids `unsafe`).
# The build and the growing corpora are cached under ~/.cache/berth; fuzz/seeds/ holds the
# committed seeds. A crash leaves its input under fuzz/artifacts/<target>/; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -O --sanitizer none <target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-20}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "installing cargo-fuzz (cached in ~/.cargo/bin)"
	cargo install cargo-fuzz --locked
fi

cache=${BERTH_FUZZ_CACHE:-$HOME/.cache/berth/fuzz}
target_dir=$cache/target
flags=(--fuzz-dir "$root/fuzz" -O --sanitizer none --target-dir "$target_dir")

start=$SECONDS
cargo fuzz build "${flags[@]}"
echo "built the fuzz targets in $((SECONDS - start))s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
printf '%-16s %12s %8s %7s\n' target executions seconds corpus
for t in $(cargo fuzz list --fuzz-dir "$root/fuzz"); do
	corpus=$cache/corpus/$t
	artifacts=$root/fuzz/artifacts/$t
	mkdir -p "$corpus" "$artifacts"
	t0=$SECONDS
	rc=0
	cargo fuzz run "${flags[@]}" "$t" "$corpus" "$root/fuzz/seeds/$t" -- \
		-max_total_time="$secs" -max_len=8192 -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$artifacts/" >"$logs/$t.log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
	if [ -z "$execs" ]; then
		execs=$(grep -oE '^#[0-9]+' "$logs/$t.log" | tail -n1 | tr -d '#')
	fi
	printf '%-16s %12s %8s %7s\n' "$t" "${execs:-?}" "$((SECONDS - t0))" "$(find "$corpus" -type f | wc -l)"
	if [ "$rc" -ne 0 ] || grep -qE 'deadly signal|panicked at|ERROR: libFuzzer' "$logs/$t.log"; then
		failed+=("$t")
		echo "---- $t failed (exit $rc); last lines of its log:"
		tail -n 40 "$logs/$t.log"
		ls -1 "$artifacts" | sed 's/^/  artifact: /'
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzzing found crashes in: ${failed[*]}" >&2
	exit 1
fi
echo "fuzzing: ${secs}s per target, no crash"
