"""BIRD's BGP sessions, read from the reply to `show protocols all`.

BIRD 1.6 (calico-node's) and BIRD 2 answer alike where it matters: one table row per protocol
(code 1002), then its details (code 1006): "BGP state:", "Neighbor address:", "Last error:", and
"Routes:" once (1.6) or once per channel (2). A session is keyed by its neighbour address, read
from the details, never from the protocol's name: calico-node's names (`Mesh_<ip>`,
`Node_<ip>`, `Global_<ip>`, with `_port_N` sometimes) are a convention, and BIRD 2's are ours.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable

import attrs

ROW = 1002  # a protocol's row of the table
DETAILS = 1006  # the lines under it

_SINCE = re.compile(r"[0-9][0-9:.\-]*")  # a time or date as `timeformat protocol` writes it
_ROUTES = re.compile(r"(\d+) imported\b.*?(\d+) exported\b")


@attrs.frozen
class BgpSession:
    """One BGP protocol: its neighbour, and how the session fares."""

    protocol: str
    neighbour: str  # the address, canonical
    state: str  # BGP's state (Established, Active, Connect, ...), or the protocol's ("down")
    since: str  # BIRD's time of the last change, as it writes it: the episode's name
    imported: int = 0
    exported: int = 0
    error: str = ""  # "Last error", while there is one

    @property
    def established(self) -> bool:
        return self.state == "Established"


def bgp_sessions(reply: Iterable[tuple[int, str]]) -> list[BgpSession]:
    """The BGP sessions in a `show protocols all` reply, as (code, text) lines. Protocols that
    are not BGP, or whose neighbour address cannot be read, are left out."""
    out = []
    row: list[str] | None = None
    details: list[str] = []
    for code, text in (*reply, (ROW, "")):
        if code == ROW:
            if row is not None and (session := _session(row, details)) is not None:
                out.append(session)
            row, details = text.split(), []
        elif code == DETAILS:
            details.append(text.strip())
    return out


def _session(row: list[str], details: list[str]) -> BgpSession | None:
    if len(row) < 4 or row[1] != "BGP":
        return None
    fields: dict[str, str] = {}
    imported = exported = 0
    for line in details:
        name, _, value = line.partition(":")
        value = value.strip()
        if name == "Routes" and (counts := _ROUTES.search(value)):
            imported += int(counts[1])  # BIRD 2: a line per channel
            exported += int(counts[2])
        else:
            fields.setdefault(name, value)
    try:
        neighbour = ipaddress.ip_address(fields.get("Neighbor address", "").split("%")[0])
    except ValueError:
        return None
    since = []
    for word in row[4:]:
        if not _SINCE.fullmatch(word):
            break
        since.append(word)
    return BgpSession(protocol=row[0], neighbour=str(neighbour),
                      state=fields.get("BGP state") or row[3], since=" ".join(since),
                      imported=imported, exported=exported, error=fields.get("Last error", ""))


def since_time(since: str, now: datetime.datetime) -> datetime.datetime:
    """When BIRD's `since` was, in the time zone of `now` (BIRD's local time, aware).

    BIRD writes a time of day for changes in the last day ("14:24:48", "14:24:48.036"), a date
    for older ones, or both. A time of day later than now was yesterday; a date alone is read
    as its midnight, the earliest it can mean; what cannot be read is now.
    """
    words = since.split()
    try:
        if len(words) == 2:
            return datetime.datetime.fromisoformat(f"{words[0]}T{words[1]}").replace(
                tzinfo=now.tzinfo)
        if len(words) == 1 and ":" in words[0]:
            clock = datetime.time.fromisoformat(words[0])
            at = datetime.datetime.combine(now.date(), clock, tzinfo=now.tzinfo)
            return at - datetime.timedelta(days=1) if at > now + datetime.timedelta(minutes=1) \
                else at
        if len(words) == 1:
            return datetime.datetime.combine(datetime.date.fromisoformat(words[0]),
                                             datetime.time(), tzinfo=now.tzinfo)
    except ValueError:
        pass
    return now
