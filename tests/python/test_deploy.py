"""Deployment files that need no root tools to check."""

import json
import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_prometheus_rule_carries_exactly_the_alerts_file():
    result = subprocess.run([sys.executable, str(ROOT / ".ci/sync-prometheusrule.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rule = yaml.safe_load((ROOT / "deploy/kubernetes/prometheusrule.yaml").read_text())
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert rule["spec"] == alerts


def test_every_alert_has_a_summary_a_description_and_a_runbook_section():
    operations = (ROOT / "docs/operations.md").read_text().lower()
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            ann = rule["annotations"]
            assert ann.get("summary") and ann.get("description"), rule["alert"]
            anchor = ann["runbook_url"].split("#", 1)[1]
            assert anchor == rule["alert"].lower(), rule["alert"]
            assert f"### {rule['alert'].lower()}" in operations, f"docs/operations.md has no runbook section for {rule['alert']}"


def test_the_dashboard_is_valid_json_with_the_required_panels():
    dash = json.loads((ROOT / "deploy/grafana/secret-rotator.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in [
        "secret_rotator_secret_expiry_timestamp_seconds",
        "secret_rotator_next_rotation_timestamp_seconds",
        "secret_rotator_rotations_total",
        "secret_rotator_propagation_seconds_bucket",
        "secret_rotator_azure_requests_total",
        "secret_rotator_azure_request_duration_seconds_bucket",
        "secret_rotator_credentials",
    ]:
        assert metric in exprs, metric
