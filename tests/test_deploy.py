"""The operator kit in deploy/: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`). The scrapes of tests/scenarios/test_scrape.py and tests/bgp check that
each metric a rule names is one rrwatch serves."""

from __future__ import annotations

import subprocess

from tests.support import PROMETHEUS, need_promtool


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
