"""The operator kit in deploy/: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`), and the Grafana dashboard is importable JSON whose queries are PromQL.
The scrapes of tests/scenarios/test_scrape.py and tests/bgp check that each metric a rule or a
panel names is one rrwatch serves."""

from __future__ import annotations

import json
import subprocess

from tests.support import DASHBOARD, PROMETHEUS, dashboard_queries, need_promtool


def promtool(*args: str) -> subprocess.CompletedProcess:
    need_promtool()
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_alert_rules_pass_promtools_check():
    done = promtool("check", "rules", "rrwatch-rules.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_each_alert_rule_passes_its_unit_tests():
    done = promtool("test", "rules", "rrwatch-rules.test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_importable_grafana_json(tmp_path):
    """One JSON document: unique panel ids, every query on the dashboard's datasource variable
    (so that import asks for a Prometheus), and every query valid PromQL (checked by promtool
    as recording rules, Grafana's $__rate_interval read as 5m)."""
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "rrwatch"
    assert {target["datasource"]["uid"] for panel in dashboard["panels"]
            for target in panel["targets"]} == {"${datasource}"}
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": q.replace("$__rate_interval", "5m")}
        for i, q in enumerate(queries)]}]}
    (tmp_path / "queries.yaml").write_text(json.dumps(rules))  # JSON is YAML
    done = promtool("check", "rules", str(tmp_path / "queries.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout
