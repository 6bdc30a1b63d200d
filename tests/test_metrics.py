"""The metrics of an RR host's refused BIRD neighbours (pure: no daemon, no HTTP)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rrwatch import metrics


class _Refused:
    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = refused

    def collect(self):
        return metrics._refused(self.refused)


def scrape(refused: dict[str, str]) -> dict[str, list]:
    """The exposition text of the refused-neighbour metrics, parsed back: name -> samples."""
    registry = CollectorRegistry()
    registry.register(_Refused(refused))
    text = generate_latest(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_refused_neighbours_are_counted_and_the_first_named_with_why():
    """A count of every refused neighbour, and an info series for the first few by name."""
    refused = {f"bad-{i:02}": "AS 0 is outside 1..4294967295" for i in range(30)}
    refused["host/fe80::8"] = "fe80::8 is link-local"
    families = scrape(refused)
    assert [s.value for s in families["rrwatch_bird_bad_neighbours"]] == [31]
    named = families["rrwatch_bird_bad_neighbour_info"]
    assert len(named) == metrics.REFUSED_SHOWN
    assert [s.labels["name"] for s in named] == [f"bad-{i:02}" for i in range(20)]
    assert {s.labels["reason"] for s in named} == {"AS 0 is outside 1..4294967295"}


def test_a_hostile_name_stays_one_label_value():
    """Quotes, backslashes and newlines in a name are escaped in the exposition, not lines."""
    evil = 'a"b\\c\nrrwatch_leader 1'
    families = scrape({evil: "127.0.0.1 is a loopback address"})
    assert [s.labels["name"] for s in families["rrwatch_bird_bad_neighbour_info"]] == [evil]
    assert "rrwatch_leader" not in families


def test_no_refused_neighbours_is_a_zero():
    """With every neighbour fit, the count is 0 and no info series is exported."""
    families = scrape({})
    assert [s.value for s in families["rrwatch_bird_bad_neighbours"]] == [0]
    assert families["rrwatch_bird_bad_neighbour_info"] == []


class _Latencies:
    def __init__(self, latency: metrics.Latency) -> None:
        self.latency = latency

    def collect(self):
        yield metrics._histogram("plan_duration_seconds", *self.latency.frozen())


def test_a_latency_is_a_histogram_with_cumulative_buckets():
    """Each observation lands in the first bucket whose bound it does not pass; the exposition
    counts cumulatively, with +Inf as the count, and the sum of what was observed."""
    latency = metrics.Latency()
    for seconds in (0.001, 0.003, 0.2, 0.2, 400.0):
        latency.observe(seconds)
    registry = CollectorRegistry()
    registry.register(_Latencies(latency))
    text = generate_latest(registry).decode()
    [family] = text_string_to_metric_families(text)
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert (buckets["0.001"], buckets["0.005"], buckets["0.25"], buckets["300.0"],
            buckets["+Inf"]) == (1, 2, 4, 4, 5)
    values = {s.name: s.value for s in family.samples}
    assert values["rrwatch_plan_duration_seconds_count"] == 5
    assert abs(values["rrwatch_plan_duration_seconds_sum"] - 400.404) < 1e-9
