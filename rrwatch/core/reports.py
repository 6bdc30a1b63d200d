"""Session reports: a speaker's BGP sessions as its BIRD has them, as kept in etcd.

A report lives at `<prefix>sessions/<speaker>`: a Calico node's name, or `host/<ip>` for an RR
host's address. It is JSON, written only when it changes, so nothing in it moves by itself:
`since` is when the session entered its state, not how long ago that was.

    {"ok": true, "sessions": {"10.0.0.2": {"state": "Established",
     "since": "2026-12-04T14:24:50Z", "imported": 12, "exported": 40,
     "protocol": "Node_10_0_0_2"}}, "unreachable": {"/var/run/calico/bird6.ctl": "..."}}

`ok` is false while no BIRD answers; `unreachable` names each control socket that does not,
with why.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Mapping
from typing import Any

import attrs

from rrwatch.core.decoding import BadRecord, json_object
from rrwatch.core.text import printable

_TIME = "%Y-%m-%dT%H:%M:%SZ"
MAX_TEXT = 200  # characters kept of a protocol name or an error: BIRD's are short


@attrs.frozen
class Session:
    state: str  # BGP's state: Established, Active, Connect, ...
    since: datetime.datetime  # when it entered that state (UTC, to the second)
    imported: int = 0
    exported: int = 0
    protocol: str = ""
    error: str = ""  # BIRD's last error, while there is one

    @property
    def established(self) -> bool:
        return self.state == "Established"


@attrs.frozen
class Report:
    ok: bool
    sessions: Mapping[str, Session]  # neighbour address -> session
    unreachable: Mapping[str, str] = attrs.field(factory=dict)  # control socket -> why


def dumps(report: Report) -> bytes:
    """The report as stored: compact, keys in order, so that the same report is the same
    bytes and an unchanged report is never written."""
    document: dict[str, Any] = {"ok": report.ok, "sessions": {
        address: _session_json(s) for address, s in sorted(report.sessions.items())}}
    if report.unreachable:
        document["unreachable"] = dict(sorted(report.unreachable.items()))
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _session_json(session: Session) -> dict[str, Any]:
    out: dict[str, Any] = {
        "state": session.state,
        "since": session.since.astimezone(datetime.UTC).strftime(_TIME),
        "imported": session.imported, "exported": session.exported,
    }
    if session.protocol:
        out["protocol"] = session.protocol
    if session.error:
        out["error"] = session.error
    return out


def parse_report(key: str, value: bytes) -> Report:
    """A stored report; BadRecord if it cannot be used."""
    document = json_object(key, value)
    ok, sessions = document.get("ok"), document.get("sessions", {})
    if not isinstance(ok, bool) or not isinstance(sessions, dict):
        raise BadRecord(key, "a report needs `ok` (true or false) and `sessions` (an object)")
    parsed = {}
    for address, raw in sessions.items():
        if _canonical(address) != address:
            raise BadRecord(key, f"sessions: {printable(address[:MAX_TEXT])!r} is not an"
                                 " address in canonical form")
        parsed[address] = _session(key, address, raw)
    unreachable = document.get("unreachable", {})
    if not isinstance(unreachable, dict) or not all(
            isinstance(v, str) for v in unreachable.values()):
        raise BadRecord(key, "unreachable: not an object of texts")
    return Report(ok, parsed, unreachable)


def _canonical(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _session(key: str, address: str, raw: object) -> Session:
    if not isinstance(raw, dict):
        raise BadRecord(key, f"sessions.{address}: not an object")
    state, since = raw.get("state"), raw.get("since")
    counts = [raw.get("imported", 0), raw.get("exported", 0)]
    texts = [raw.get("protocol", ""), raw.get("error", "")]
    if not (isinstance(state, str) and state.isalpha() and isinstance(since, str)
            and all(type(n) is int and n >= 0 for n in counts)
            and all(isinstance(t, str) for t in texts)):
        raise BadRecord(key, f"sessions.{address}: needs a state, a since time, counts of"
                             " routes and texts")
    try:
        at = datetime.datetime.strptime(since, _TIME).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise BadRecord(key, f"sessions.{address}: since is not a UTC time like"
                             " 2026-12-04T14:24:50Z") from None
    return Session(state, at, counts[0], counts[1], texts[0][:MAX_TEXT], texts[1][:MAX_TEXT])
