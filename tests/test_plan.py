"""Plans: only differences, make before break, nothing written that rrwatch does not own."""

from __future__ import annotations

from hypothesis import given

from rrwatch.mesh import desired
from rrwatch.model import Peer
from rrwatch.plan import DeletePeer, PutPeer, SetNode, make_plan
from tests import strategies as s
from tests.helpers import carry_out, state_of
from tests.test_mesh import POLICY


@given(s.clusters())
def test_one_plan_converges(nodes):
    """Carrying out a plan's make then break phases leaves nothing to do (steady state)."""
    state = state_of(nodes)
    plan = make_plan(state, desired(state, POLICY))
    carry_out(state, plan.make)
    carry_out(state, plan.brk)
    assert not make_plan(state, desired(state, POLICY))


@given(s.clusters())
def test_make_phase_never_breaks(nodes):
    """Promotions and peer writes are in `make`; demotions and peer deletes only in `brk`."""
    state = state_of(nodes)
    plan = make_plan(state, desired(state, POLICY))
    assert all(isinstance(op, PutPeer) or (isinstance(op, SetNode) and op.cluster)
               for op in plan.make)
    assert all(isinstance(op, DeletePeer) or (isinstance(op, SetNode) and not op.cluster)
               for op in plan.brk)


@given(s.clusters())
def test_no_zone_loses_its_last_rr_between_phases(nodes):
    """After `make`, before `brk`, every zone that will have RRs has all of its new ones."""
    state = state_of(nodes)
    mesh = desired(state, POLICY)
    carry_out(state, make_plan(state, mesh).make)
    for name, cluster in mesh.reflectors.items():
        assert state.nodes[name].cluster_id == cluster


def test_peer_not_owned_is_never_written():
    """A BGPPeer with a desired name but no ownership label is reported, never touched."""
    state = state_of([])
    state.put_peer(Peer("rrwatch-rr-mesh", 7, owned=False, spec={"peerIP": "10.0.0.1"}))
    plan = make_plan(state, desired(state, POLICY))
    assert plan.blocked == ("rrwatch-rr-mesh",)
    assert all(op.name != "rrwatch-rr-mesh" for op in plan.make + plan.brk)


def test_stale_owned_peer_is_deleted_after_the_make_phase():
    """An owned BGPPeer that the mesh no longer needs is deleted in `brk`, guarded."""
    state = state_of([])
    state.put_peer(Peer("rrwatch-old", 5, owned=True, spec={}))
    plan = make_plan(state, desired(state, POLICY))
    assert DeletePeer("rrwatch-old", 5) in plan.brk
    assert all(op.name != "rrwatch-old" for op in plan.make)
