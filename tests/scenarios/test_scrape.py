"""A scrape of the real daemon as Prometheus takes it: clean by `promtool check metrics`, every
metric the alert rules and the dashboard name, the build info, the client certificate's expiry
as a timestamp, and latency histograms that a change answered fills. (RR host mode's scrape is
checked in tests/bgp/test_bgp.py.)"""

from __future__ import annotations

import importlib.metadata

from cryptography import x509

from rrwatch.core import calico
from rrwatch.etcd import delete
from tests.support import (
    converged,
    kit_metrics,
    promtool_check_metrics,
    rr_names,
    scraped_families,
    seed,
    wait_until,
)


async def test_a_scrape_is_clean_and_times_plans_and_answers(etcd, start_daemon, tls, promtool):
    await seed(etcd, per_zone=4)
    daemon = start_daemon()
    _, data = await converged(etcd)
    gone = sorted(rr_names(data))[0]
    await etcd.txn([], [delete(calico.NODES + gone)])  # an RR leaves: another is promoted
    await converged(etcd)
    await wait_until(
        lambda: daemon.metrics().get("rrwatch_change_to_write_seconds_count", 0) >= 1)

    text = daemon.exposition()
    # Every metric an alert rule or the dashboard names is served (RR host mode's: tests/bgp).
    assert {name for name in kit_metrics() if not name.startswith("rrwatch_bird_")} <= (
        scraped_families(text))
    samples = {sample.name: sample for sample in daemon.samples()}
    assert samples["rrwatch_plan_duration_seconds_count"].value == (
        samples["rrwatch_plans_total"].value)  # one observation per plan, in one scrape
    assert samples["rrwatch_change_to_write_seconds_sum"].value > 0
    assert samples["rrwatch_build_info"].labels == {
        "version": importlib.metadata.version("rrwatch")}
    with open(tls.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    assert samples["rrwatch_tls_cert_expiry_timestamp_seconds"].value == (
        cert.not_valid_after_utc.timestamp())
    assert promtool_check_metrics(text) == ""
