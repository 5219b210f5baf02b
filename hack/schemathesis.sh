#!/usr/bin/env bash
# Runs schemathesis (PyPI, pinned) against /openapi.json of a running berth-apiserver: every
# operation, positive and negative data, every check; fails on any failure.
#
#   hack/schemathesis.sh            # BERTH_SCHEMATHESIS_MAX_EXAMPLES (default 200) per operation
#
# The server runs from target/debug/berth-apiserver (built here) on a free loopback port with the
# mem store, TLS from a throwaway CA (made with openssl; schemathesis verifies against it) and
# `--auth-mode static-keys` with a one-key file, so every lease call passes the auth middleware
# and schemathesis' ignored_auth check probes the 401 paths.
#
# Watch streams: the list and get operations take `watch=true`, which answers with a
# Server-Sent Events stream that stays open until the client leaves. Schemathesis runs those
# operations with `watch` fixed to false (schemathesis.toml below); the streams are covered by
# the server's own watch tests, not here.
#
# Checks: all of them but positive_data_acceptance, which expects every schema-valid request to
# succeed; Berth rejects some with 400 for rules JSON Schema cannot state (an opaque `continue`
# token or `resourceVersion` from an earlier answer, namespace and name together at most 253
# characters) and answers 403 when the holder is not the caller's key id. Strings are generated
# as ASCII so that the holder limit of 253 UTF-8 bytes is the schema's maxLength of 253.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=4.32.5
venv=$HOME/.cache/berth/venv-schemathesis
max_examples=${BERTH_SCHEMATHESIS_MAX_EXAMPLES:-200}

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$version"; then
	echo "installing schemathesis $version into $venv"
	python3 -m venv "$venv"
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi

bin=${BERTH_APISERVER_BIN:-}
if [ -z "$bin" ]; then
	cargo build --quiet -p berth-apiserver --bin berth-apiserver
	bin=$root/target/debug/berth-apiserver
fi

work=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# A CA and a server certificate for 127.0.0.1 / localhost.
(
	cd "$work"
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=berth schemathesis CA" \
		-keyout ca.key -out ca.crt 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout tls.key -out tls.csr 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
	openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
		-extfile ext.cnf -out tls.crt 2>/dev/null
)

token=$(openssl rand -hex 24)
printf '# schemathesis run\nschemathesis:%s\n' "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" >"$work/api-keys"

"$bin" --listen-addr 127.0.0.1:0 --metrics-addr '' \
	--tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key" \
	--store-backend mem --auth-mode static-keys --api-keys-file "$work/api-keys" \
	--log-format json --log-level warn,berth_apiserver=info >"$work/server.log" 2>&1 &
pid=$!

port=
for _ in $(seq 1 100); do
	port=$(sed -n 's/.*"message":"listening".*"addr":"127\.0\.0\.1:\([0-9]*\)".*/\1/p; s/.*"addr":"127\.0\.0\.1:\([0-9]*\)".*"message":"listening".*/\1/p' "$work/server.log" | head -n1)
	[ -n "$port" ] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$port" ]; then
	echo "berth-apiserver did not start:" >&2
	cat "$work/server.log" >&2
	exit 1
fi
echo "berth-apiserver listening on https://127.0.0.1:$port (pid $pid)"

# Most bodies name the caller as holder, and most paths one of a few keys, so that acquire,
# renew, release, get and history meet existing leases rather than only 403 and 404.
cat >"$work/schemathesis.toml" <<TOML
[parameters]
"body.holder" = { dictionary = "holder", probability = 0.7 }
"path.ns" = { dictionary = "ns", probability = 0.6 }
"path.name" = { dictionary = "name", probability = 0.6 }

[dictionaries.holder]
values = ["schemathesis"]

[dictionaries.ns]
values = ["team-a", "b"]

[dictionaries.name]
values = ["lease-1", "db.primary"]

[[operations]]
include-name = ["GET /v1alpha1/leases", "GET /v1alpha1/namespaces/{ns}/leases", "GET /v1alpha1/namespaces/{ns}/leases/{name}"]
parameters = { "query.watch" = "false" }
TOML

cd "$work" # schemathesis keeps a .schemathesis/ folder in its working directory
start=$SECONDS
rc=0
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run \
	"https://127.0.0.1:$port/openapi.json" \
	--tls-verify "$work/ca.crt" \
	--header "Authorization: Bearer $token" \
	--checks all \
	--exclude-checks positive_data_acceptance \
	--generation-codec ascii \
	--mode all \
	--max-examples "$max_examples" \
	--workers 2 \
	--request-timeout 10 \
	--seed "${BERTH_SCHEMATHESIS_SEED:-$RANDOM}" \
	--generation-database none \
	--report junit --report-junit-path "$work/junit.xml" \
	--no-color 2>&1 | tee "$work/schemathesis.out" || rc=$?
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$work/schemathesis.out" | tail -n1)
echo "schemathesis: ${cases:-?} test cases in $((SECONDS - start))s"
if ! kill -0 "$pid" 2>/dev/null; then
	echo "berth-apiserver exited during the run:" >&2
	tail -n 50 "$work/server.log" >&2
	rc=1
	pid=
fi
if grep -q '"level":"ERROR"' "$work/server.log"; then
	echo "berth-apiserver logged errors:" >&2
	grep '"level":"ERROR"' "$work/server.log" | head -n 20 >&2
	rc=1
fi
echo "schemathesis: exit $rc"
exit "$rc"
