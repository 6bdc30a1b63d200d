"""Which ops of a plan to write now, as the route check (`steps`) lets them go. Pure code.

The make phase goes in the steps the churn limit cuts, or whole; a break step goes as far as
its longest first part that loses nothing; and when nothing of a step can go, a detour: a
single break op that loses nothing on its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rrwatch.core.model import ClusterState
from rrwatch.core.plan import Limits, Op, reids
from rrwatch.core.steps import Check, Steps, applied

DETOUR = 8  # break ops a detour judges, at most


def take_make(judge: Steps, state: ClusterState, phase: Sequence[Op], step: Sequence[Op], *,
              version: int | None = None) -> tuple[tuple[Op, ...], Check]:
    """The make ops to write now, and the check that took or refused them.

    The step (the phase cut by the churn limit) if it loses nothing. Otherwise the whole phase,
    if that loses nothing: a cut can leave routes in mid-air that the rest of the phase carries.
    With the node-to-node mesh on, for one, promoted RRs leave the mesh at once, and the clients
    not yet in the step have no session with them until their own writes; every cut of a first
    start would then be refused, and holding would never converge. Smaller cuts are no help: a
    prefix of promotions without the peers that follow them loses more. Every step that is
    taken loses nothing, so neither does the phase they add up to. If the whole phase would
    lose routes, nothing is taken: the check returned is the phase's.
    """
    verdict = judge.check(state, step, version=version)
    if verdict.ok:
        return tuple(step), verdict
    if len(step) < len(phase):
        verdict = judge.check(state, phase, version=version)
        if verdict.ok:
            return tuple(phase), verdict
    return (), verdict


def take_break(judge: Steps, state: ClusterState, step: Sequence[Op], *,
               version: int | None = None) -> tuple[tuple[Op, ...], Check]:
    """The longest of the break step, its first half, quarter, ... down to its first op, that
    loses nothing (break ops remove sessions one by one, in the plan's order: re-IDs, clients
    off old RRs, BGPPeers, then demotions); none if each would lose routes, with the step's check.
    """
    first = verdict = judge.check(state, step, version=version)
    n = len(step)
    while not verdict.ok and n > 1:
        n //= 2
        verdict = judge.check(state, step[:n], version=version)
    return (tuple(step[:n]), verdict) if verdict.ok else ((), first)


def take_detour(judge: Steps, state: ClusterState, ops: Sequence[Op], *,
                version: int | None = None) -> tuple[tuple[Op, ...], Check]:
    """A detour around a held step: of the first DETOUR break ops `ops`, the first that loses
    nothing on its own, and each later one that loses nothing with those taken, with their
    check; none, with an empty check, if none does.

    A step can be held for good when the cluster is in a state no plan foresaw (another writer
    gave many nodes one cluster ID, say): every order that the plan's phases allow loses routes
    on the way. Break ops that together lose no route, and whose sessions the gate has
    verified, are safe in any order, and taking them changes what the held step would lose:
    after a foreign writer, demoting the stray RRs first lets the rest of the plan through.
    (One op per detour took a demotion per judgement: 20 strays took 20 s in the fault test.)
    """
    taken: tuple[Op, ...] = ()
    verdict = Check()
    for op in ops[:DETOUR]:
        tried = judge.check(state, (*taken, op), version=version)
        if tried.ok:
            taken, verdict = (*taken, op), tried
    return taken, verdict


def phases(state: ClusterState, make: Sequence[Op], brk: Sequence[Op], limits: Limits
           ) -> Iterator[tuple[str, tuple[Op, ...], Check]]:
    """The make phase as a whole, then the break phase in the steps that `limits` cuts, each
    judged against the state that the one before leaves (for `plan`): (name, ops, check). Stops
    after the first that is refused, with the detour the daemon would take there, if any
    (`take_detour`, when no first part of the step loses nothing; the gate and the pace aside)."""
    judge = Steps()
    now = state
    cuts: list[tuple[str, tuple[Op, ...]]] = [("make phase", tuple(make))] if make else []
    rest = tuple(brk)
    while rest and (step := limits.step(rest)):
        cuts.append((f"break step {len(cuts) + 1 - bool(make)}", step))
        taken = set(map(id, step))
        rest = tuple(op for op in rest if id(op) not in taken)
    done: set[int] = set()  # the break ops of the cuts taken
    for name, ops in cuts:
        after = applied(now, ops)
        verdict = judge.compare(now, after, restarted=reids(ops))
        yield name, ops, verdict
        if not verdict.ok:
            if name != "make phase" and take_break(judge, now, ops)[0]:
                return  # the daemon takes the first part of the step that loses nothing
            detour, verdict = take_detour(judge, now, [op for op in brk if id(op) not in done])
            if detour:
                yield "detour", detour, verdict
            return
        done.update(map(id, ops))
        now = after
