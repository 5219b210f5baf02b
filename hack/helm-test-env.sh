#!/usr/bin/env bash
# Prepares a Python with helm-python-sdk (Helm's Go SDK behind a C ABI; no helm binary) for
# the chart tests in tests/e2e/tests/helm.rs, and prints the variable that points them at it:
#   eval "$(hack/helm-test-env.sh)"
set -euo pipefail
venv="${BERTH_HELM_VENV:-$HOME/.cache/berth/helm-venv}"
version="${BERTH_HELM_PYTHON_SDK_VERSION:-0.2.2}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import helm_python' 2>/dev/null; then
  "$venv/bin/pip" install --quiet "helm-python-sdk==$version" >&2
fi
"$venv/bin/python" -c 'import helm_python as h; print("helm SDK", h.helm_sdk_version(), file=__import__("sys").stderr)'
echo "export BERTH_TEST_HELM_PYTHON=$venv/bin/python"
