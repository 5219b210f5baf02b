"""Render or lint a Helm chart with the real Helm engine (helm-python-sdk, Helm's Go SDK).

Usage: render.py render|lint CHART_DIR < request.json

The request is a JSON object:
  {"values_yaml": ["<values file text>", ...],   # merged in order, like -f
   "set": ["a.b=c", ...],                        # applied last, like --set
   "name": "release", "namespace": "berth-system"}

The answer on stdout is one JSON object:
  render: {"ok": true, "manifests": {"<template path>": "<yaml>", ...}}
  lint:   {"ok": true, "report": {...}}
  either: {"ok": false, "kind": "<Helm error class>", "error": "<message>"}
"""

import json
import sys

import helm_python as helm


def merge(into, other):
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def values_of(request):
    values = {}
    for text in request.get("values_yaml", []):
        merge(values, helm.values_from_yaml(text) or {})
    for expr in request.get("set", []):
        merge(values, helm.parse_set_string(expr))
    return values


def main():
    mode, chart_dir = sys.argv[1], sys.argv[2]
    request = json.load(sys.stdin)
    try:
        values = values_of(request)
        if mode == "render":
            chart = helm.Chart.load(chart_dir)
            chart.validate_schema(chart.merge_values(values))
            manifests = chart.render(
                values,
                name=request.get("name", "berth"),
                namespace=request.get("namespace", "berth-system"),
                is_install=True,
            )
            answer = {"ok": True, "manifests": manifests}
        elif mode == "lint":
            report = helm.lint(
                chart_dir,
                values,
                strict=True,
                namespace=request.get("namespace", "berth-system"),
            )
            answer = {"ok": True, "report": report}
        else:
            answer = {"ok": False, "kind": "usage", "error": f"unknown mode {mode!r}"}
    except helm.HelmError as err:
        answer = {"ok": False, "kind": type(err).__name__, "error": str(err)}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
