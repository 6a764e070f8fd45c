"""The chart's alert rules, checked and unit-tested by promtool: the rules file is the chart's
PrometheusRule as helm renders it (one source, files/alerts.yaml), so the two cannot drift."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart.helming import CHART, Helm, find

UNIT_TESTS = Path(__file__).with_name("alerts-test.yaml")


@pytest.fixture(scope="module")
def rules_file(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rule = find(helm.template(CHART / "ci" / "monitoring-values.yaml"), "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "spendmeter-rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def alert_names(rules_file: Path) -> set[str]:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_accepts_the_rules(promtool: Path, rules_file: Path) -> None:
    proc = subprocess.run([str(promtool), "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_names(rules_file))} rules found" in proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not(rules_file: Path) -> None:
    tests: list[dict[str, Any]] = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tests for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert len(alert_names(rules_file)) >= 4
    assert firing == alert_names(rules_file)
    assert quiet == alert_names(rules_file)


def test_promtool_unit_tests_pass(promtool: Path, rules_file: Path, tmp_path: Path) -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str(rules_file)]
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([str(promtool), "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
