"""The alert rules (deploy/prometheus/): valid for promtool, every alert unit-tested to fire and
not to fire, thresholds that are the production targets of loadtest/slo.yaml, a scrape config
that reaches the Kubernetes Service's metrics port, and a runbook section in docs/operations.md
for every alert, which its runbook_url names."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from model.config import ROOT
from tests.tools import monitoring_tool

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
ALERTS = {rule["alert"]: rule for rule in RULES}
UNIT_TEST_FILES = ["alerts_test.yml", "alerts_drift_test.yml"]
UNIT_TESTS = [test for name in UNIT_TEST_FILES for test in yaml.safe_load((PROMETHEUS / name).read_text())["tests"]]
BASELINE = yaml.safe_load((ROOT / "loadtest" / "slo.yaml").read_text())["scenarios"]["baseline"]["slo"]
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOK = "## Runbook"


@pytest.fixture(scope="module")
def promtool() -> str:
    return monitoring_tool("promtool")


def test_the_rules_and_the_scrape_config_pass_promtool(promtool):
    for command in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run([promtool, *command], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_fires_and_stays_silent_in_the_unit_tests(promtool):
    done = subprocess.run(
        [promtool, "test", "rules", *UNIT_TEST_FILES], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    checks = [check for test in UNIT_TESTS for check in test["alert_rule_test"]]
    assert {check["alertname"] for check in checks if check["exp_alerts"]} == set(ALERTS)
    assert {check["alertname"] for check in checks if not check["exp_alerts"]} == set(ALERTS)


def test_the_unit_tests_can_fail(promtool, tmp_path):
    """The same rules with the 5xx threshold loosened tenfold: the test that expects the alert fails."""
    shutil.copyfile(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text().replace("> 0.01", "> 0.1", 1))
    done = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "MymodelServerErrors" in done.stdout + done.stderr


def test_the_thresholds_are_the_production_targets():
    assert f"> {BASELINE['max_error_pct'] / 100:g}" in ALERTS["MymodelServerErrors"]["expr"]
    assert f"> {BASELINE['mean_ms']:g}" in ALERTS["MymodelSlowAnswers"]["expr"]
    assert f"> {BASELINE['p95_ms']:g}" in ALERTS["MymodelSlowBatches"]["expr"]
    assert "histogram_quantile(0.95," in ALERTS["MymodelSlowBatches"]["expr"]
    assert f"> {BASELINE['mean_ms'] / 2:g}" in ALERTS["MymodelQueueSaturated"]["expr"]
    assert {"MymodelNoReadyWorker", "MymodelPredictionDrift"} <= set(ALERTS)
    assert all(rule["labels"]["severity"] in {"page", "ticket"} for rule in RULES)


def test_the_scrape_config_reaches_every_replicas_metrics_port():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    service = yaml.safe_load((ROOT / "deploy" / "k8s" / "service-metrics.yaml").read_text())
    assert service["spec"]["clusterIP"] == "None"  # headless: one address per ready pod
    assert discovery["names"] == [service["metadata"]["name"]]
    (metrics_port,) = service["spec"]["ports"]
    assert discovery["port"] == metrics_port["port"]
    properties = dict(
        line.split("=", 1)
        for line in (ROOT / "config.properties").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert properties["metrics_address"].rsplit(":", 1)[1] == str(metrics_port["port"])
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_worker_restart_alert_reads_a_metric_the_server_declares():
    """WorkerLoadTime, which TorchServe sets at every (re)load of a worker (tests/integration/test_readiness.py
    sees a killed worker change it), must be declared for Prometheus to serve it."""
    metrics = yaml.safe_load((ROOT / "handler" / "metrics.yaml").read_text())
    gauges = {metric["name"] for metric in metrics["ts_metrics"]["gauge"]}
    assert "changes(WorkerLoadTime[" in ALERTS["MymodelWorkerRestarts"]["expr"]
    assert "WorkerLoadTime" in gauges


def runbook_sections(page: str) -> list[str]:
    """The `### ` headings under the page's runbook, up to the next `## ` heading."""
    runbook = page.split(f"\n{RUNBOOK}\n", 1)[1]
    runbook = re.split(r"^## ", runbook, maxsplit=1, flags=re.M)[0]
    return re.findall(r"^### (\S+)\s*$", runbook, re.M)


def test_every_alert_has_a_runbook_section_and_every_section_an_alert():
    sections = runbook_sections(OPERATIONS.read_text())
    assert len(sections) == len(set(sections)), f"a runbook section is repeated: {sections}"
    assert set(sections) == set(ALERTS), (
        f"alerts without a section: {sorted(set(ALERTS) - set(sections))}; "
        f"sections without an alert: {sorted(set(sections) - set(ALERTS))}"
    )


def test_every_runbook_url_names_its_alerts_section():
    for name, rule in ALERTS.items():
        # GitHub's anchor of a heading that is one word: the word in lower case
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}", name
        assert (ROOT / rule["annotations"]["runbook_url"].split("#")[0]).exists()


def test_the_runbook_check_sees_sections_and_their_end():
    page = f"# Ops\n\n{RUNBOOK}\n\n### AlertA\n\ntext\n\n### AlertB\n\n## Later\n\n### NotAnAlert\n"
    assert runbook_sections(page) == ["AlertA", "AlertB"]
