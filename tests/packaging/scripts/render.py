"""Renders and lints one vclink chart with Helm's Go SDK (PyPI helm-python-sdk).

Usage: render.py CHART_DIR RELEASE NAMESPACE [VALUES_FILE ...]
Prints one JSON object: {"lint": {...}, "schema_error": str|null,
"manifests": {template path: rendered text}}. Values files are merged in order, like
`helm -f a -f b`. Exit code 0 whenever the script ran; the Rust test judges the result.
"""

import json
import sys

import helm_python as helm


def merge(base, over):
    """Deep merge like Helm's coalescing of -f files (maps merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def main():
    chart_dir, release, namespace = sys.argv[1:4]
    values = {}
    for path in sys.argv[4:]:
        with open(path, encoding="utf-8") as f:
            values = merge(values, helm.values_from_yaml(f.read()))
    lint = helm.lint(chart_dir, values, strict=True, namespace=namespace)
    schema_error = None
    manifests = {}
    with helm.Chart.load(chart_dir) as chart:
        try:
            chart.validate_schema(chart.merge_values(values))
        except helm.HelmError as e:  # reported, judged by the caller
            schema_error = str(e)
        if schema_error is None:
            manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
    json.dump({"lint": lint, "schema_error": schema_error, "manifests": manifests}, sys.stdout)


if __name__ == "__main__":
    main()
