"""Session reports as the daemon and `rrwatch status` read them from a real etcd: each RR's
report under its name, RRs without one named as such, and a report rrwatch cannot use counted as
a bad record, never a crash."""

from __future__ import annotations

import datetime
import json

from rrwatch.core.reports import Report, Session, dumps
from rrwatch.etcd import delete
from rrwatch.testing import simulate
from tests.support import converged, rr_names, seed, wait_until

PREFIX = "/rrwatch/v1/sessions/"
AT = datetime.datetime(2026, 12, 4, 14, 0, 0, tzinfo=datetime.UTC)


async def test_status_shows_each_rrs_report_and_bad_reports_are_skipped(etcd, start_daemon,
                                                                         rrwatch):
    await seed(etcd, per_zone=8)
    daemon = start_daemon()
    _, data = await converged(etcd)
    reporting, *silent = sorted(rr_names(data))
    report = Report(True, {"10.0.0.1": Session("Established", AT, 5, 7, "Node_10_0_0_1"),
                           "10.0.0.2": Session("Active", AT, error="Socket: Connection refused")})
    bad = {PREFIX + "Not_A_Node": dumps(report), PREFIX + "host/10.0.0.01": dumps(report),
           PREFIX + "other-node": b'{"ok": "yes"}'}
    await simulate.put_all(etcd, {PREFIX + reporting: dumps(report), **bad})
    for key in bad:
        await daemon.wait_for_log(f"skipping {key}")
    await wait_until(lambda: daemon.metrics().get("rrwatch_bad_records_current") == len(bad))

    result = rrwatch("status", "--output", "json")
    assert result.returncode == 0, result.stderr
    reports = {r["speaker"]: r for r in json.loads(result.stdout)["reports"]}
    assert reports[reporting] == {"speaker": reporting, "rr": True,
                                  "report": json.loads(dumps(report))}
    assert all(reports[rr] == {"speaker": rr, "rr": True, "report": None} for rr in silent)
    assert reports.keys() == {reporting, *silent}

    text = rrwatch("status").stdout
    assert f"sessions of RR {reporting}: 1 of 2 Established" in text
    assert f"sessions of RR {silent[0]}: not reported (no `rrwatch report` there)" in text
    assert daemon.proc.poll() is None

    # Deleting them leaves no bad record behind, whatever their keys named.
    await etcd.txn([], [delete(key) for key in bad])
    await wait_until(lambda: daemon.metrics().get("rrwatch_bad_records_current") == 0)
