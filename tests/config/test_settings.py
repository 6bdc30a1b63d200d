"""The policy object in etcd laid over the local policy: pure, no etcd."""

from __future__ import annotations

import ipaddress

import pytest

from rrwatch.config import load
from rrwatch.config.settings import Settings, overlay
from rrwatch.core import calico
from rrwatch.core.model import Node
from rrwatch.daemon.live import Live

KEY = "/rrwatch/v1/policy"


def node(name: str, zone: str) -> Node:
    return Node(name, 1, {"zone": zone}, ipaddress.IPv4Address("10.0.0.1"))


def test_overlay_sets_only_what_the_object_names():
    local = Settings.of(load({"ROUTE_REFLECTOR_MIN": "2", "RRWATCH_MAX_DEMOTIONS": "3"}))
    settings = overlay(local, KEY, b'{"topology": "multi", "client_rrs": 2, "max_node_writes": 9,'
                                   b' "zone_label": "zone"}')
    assert (settings.policy.topology, settings.policy.client_rrs) == ("multi", 2)
    assert (settings.policy.min_rrs, settings.limits.demotions) == (2, 3)  # local values stay
    assert (settings.limits.node_writes, settings.zone_label) == (9, "zone")


@pytest.mark.parametrize(("value", "reason"), [
    (b"[1]", "not a JSON object"),
    (b'{"topology": "zoned", "colour": 1}', "unknown key colour"),
    (b'{"min": "two", "ratio": 3}', "min: invalid literal for int() with base 10: 'two'; ratio:"
                                    " 3 is not in (0, 1]"),
    (b'{"min": 9, "max": 4}', "min 9 and max 4 are not 0 <= min <= max"),
    (b'{"exclude": {"a": 1}}', "exclude: a table is not a value of this key"),
])
def test_a_bad_object_is_a_bad_record_naming_why(value, reason):
    with pytest.raises(calico.BadRecord) as error:
        overlay(Settings.of(load({})), KEY, value)
    assert error.value.key == KEY and reason in error.value.reason


def test_live_reshapes_the_model_when_the_zone_label_changes_and_back():
    live = Live(load({}))
    state = live.records.new_state()
    for name, zone in (("a1", "a"), ("b1", "b"), ("b2", "b")):
        state.put_node(node(name, zone))
    assert state.speakers == {"": 3}
    live.apply(state, KEY, b'{"zone_label": "zone"}', 5)
    assert state.speakers == {"a": 1, "b": 2} and live.version == 1
    live.apply(state, KEY, b'{"zone_label": "zone", "min": 1}', 6)  # same shape: no re-index
    assert live.settings.policy.min_rrs == 1 and live.version == 2
    with pytest.raises(calico.BadRecord):
        live.apply(state, KEY, b'{"zone_label": 7.5, "min": -1}', 7)
    assert live.settings.policy.min_rrs == 1 and state.speakers == {"a": 1, "b": 2}  # kept
    live.apply(state, KEY, None, 8)
    assert live.settings == live.local and state.speakers == {"": 3}


def test_a_snapshot_without_the_object_brings_back_the_local_policy():
    """An object deleted while no watch saw it is gone from the next snapshot."""
    live = Live(load({}))
    state = live.records.new_state()
    live.apply(state, KEY, b'{"topology": "zoned"}', 5)
    live.records.loaded(state, {calico.NODES + "a1"})
    assert live.settings == live.local


def test_reconfigure_lays_the_object_over_the_new_local_policy():
    live = Live(load({}))
    state = live.records.new_state()
    live.apply(state, KEY, b'{"topology": "zoned"}', 5)
    live.reconfigure(load({"ROUTE_REFLECTOR_MAX": "7"}), state)
    assert (live.settings.policy.topology, live.settings.policy.max_rrs) == ("zoned", 7)
