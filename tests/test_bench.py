"""The benchmarks' own parts: the full re-listing baseline is a real reconciler, and the
percentiles the tables print are nearest-rank ones. (The benchmarks themselves time things, so
they are not in the suite: `make bench`.)"""

from __future__ import annotations

from bench.baseline import reconcile
from bench.run import percentile
from rrwatch import config
from rrwatch.core.plan import Planner
from rrwatch.daemon.live import Live
from rrwatch.daemon.records import load
from rrwatch.testing import simulate


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values[::-1], 100) == 100
    assert percentile([7.0], 99) == 7.0


async def test_the_baseline_converges_a_multi_cluster_as_rrwatch_would_plan_it(etcd, daemon_env):
    """Re-listing everything per pass, the baseline writes the mesh rrwatch's planner wants:
    after it stops writing, a fresh plan from etcd is empty."""
    env = {**daemon_env, "ROUTE_REFLECTOR_TOPOLOGY": "multi",
           "ROUTE_REFLECTOR_ZONE_LABEL": simulate.ZONE_LABEL}
    for zone in ("a", "b", "c"):
        await simulate.put_all(etcd, simulate.nodes(zone, range(6)))
    live = Live(config.load(env, {}, default_file=""))
    passes = [await reconcile(etcd, live) for _ in range(3)]
    assert passes[0] > 18 and passes[-1] == 0  # promotions and peers and labels, then nothing
    snapshot = await load(etcd, live.records)
    assert not Planner(live.settings.policy).plan(snapshot.state)[1]
