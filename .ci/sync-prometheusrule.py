#!/usr/bin/env python3
"""Writes deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.yml (one source of
truth for the alerts). `--check` only reports whether they differ (exit 1 when they do)."""

import pathlib
import sys

import yaml

root = pathlib.Path(__file__).resolve().parents[1]
alerts = yaml.safe_load((root / "deploy/prometheus/alerts.yml").read_text())
doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "secret-rotator"}, "spec": alerts}
text = "# Generated from deploy/prometheus/alerts.yml (CI fails when they differ):\n#   python3 .ci/sync-prometheusrule.py\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)
target = root / "deploy/kubernetes/prometheusrule.yaml"
if "--check" in sys.argv:
    if target.read_text() != text:
        print(f"{target} is out of date: run python3 .ci/sync-prometheusrule.py", file=sys.stderr)
        sys.exit(1)
else:
    target.write_text(text)
