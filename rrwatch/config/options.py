"""One frozen Config, from a TOML file, the environment and flags, each over the one before.

Every option is declared once, in OPTIONS: its key in the file, its environment names (the
seeds' names first), its flag, its parser and its default, written as it would be in the
environment. Every problem is reported at once, in one ConfigError, each naming its source.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs

from rrwatch.core.model import RRLabel
from rrwatch.core.policy import TOPOLOGIES
from rrwatch.core.selector import Selector, SelectorError
from rrwatch.core.selector import parse as parse_selector
from rrwatch.logs import FORMATS

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")

# The longest lease an instance asks for (RRWATCH_LEASE_TTL's bound): a leader key on a longer
# one was not put there by rrwatch.
MAX_LEASE_TTL = 300


def _endpoints(text: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in text.split(",") if part.strip())
    if not urls:
        raise ValueError("no endpoint given")
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s)://host:port URL")
        parts.port  # noqa: B018 - raises ValueError for a bad port
    return urls


def _file(text: str) -> str:
    """A file rrwatch reads; whether it can, and what is in it, is checked with the others."""
    return text.strip()


def _label(text: str) -> RRLabel:
    key, _, value = text.partition("=")
    if not _LABEL_KEY.match(key) or len(key) > 316:
        raise ValueError(f"{key!r} is not a label key")
    if not _LABEL_VALUE.match(value) or len(value) > 63:
        raise ValueError(f"{value!r} is not a label value")
    return RRLabel(key, value)


def _zone_label(text: str) -> str:
    if text and not _LABEL_KEY.match(text):
        raise ValueError(f"{text!r} is not a label key")
    return text


def _finite(text: str) -> float:
    """A float, but not nan or ±inf, which pass or break every comparison made with them."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()!r} is not a finite number")
    return value


def _at_least(parse: Callable[[str], Any], low: float, high: float = math.inf
              ) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        value = parse(text)
        if value < low:
            raise ValueError(f"{text.strip()} is less than {low}")
        if value > high:
            raise ValueError(f"{text.strip()} is more than {high}")
        return value
    return check


def _fraction(text: str) -> float:
    value = _finite(text)
    if not 0 < value <= 1:
        raise ValueError(f"{text.strip()} is not in (0, 1]")
    return value


def _ips(text: str) -> tuple[str, ...]:
    """Comma-separated addresses, at most one IPv4 and one IPv6."""
    ips = tuple(str(ipaddress.ip_address(part.strip())) for part in text.split(",")
                if part.strip())
    if len({ipaddress.ip_address(ip).version for ip in ips}) < len(ips):
        raise ValueError(f"{text!r} has more than one address of a family")
    return ips


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDR prefixes (an address alone is a /32 or /128); empty for none."""
    out = []
    for part in (part.strip() for part in text.split(",")):
        if part:
            try:
                out.append(ipaddress.ip_network(part))
            except ValueError as e:
                raise ValueError(f"{part!r} is not a CIDR prefix ({e})") from None
    return tuple(out)


def _bird_config(text: str) -> str:
    """The BIRD configuration file rrwatch writes: a regular file or none yet, in a directory
    that exists. Made absolute, since BIRD resolves a relative one from its own directory."""
    if not text.strip():
        return ""
    path = os.path.abspath(text.strip())
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"the directory of {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a file")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ValueError(f"{path!r} is not a regular file")
    return path


def _include(text: str) -> str:
    """A path for BIRD's `include "...";`: BIRD strings have no escapes, so a quote, a
    backslash or a control character would end the string or the line early."""
    text = text.strip()
    if any(c in '"\\' or not c.isprintable() for c in text):
        raise ValueError(f"{text!r} holds a quote, a backslash or a control character")
    return text


def _cluster_id(text: str) -> str:
    return str(ipaddress.IPv4Address(text.strip())) if text.strip() else ""


def _prefix(text: str) -> str:
    if not text.startswith("/") or not text.endswith("/") or text.startswith("/calico/"):
        raise ValueError(f"{text!r} is not a key prefix like /rrwatch/v1/ outside /calico/")
    return text


def _address(text: str) -> tuple[str, int] | None:
    """host:port to listen on ([::1]:9000 for IPv6); empty for none."""
    if not text.strip():
        return None
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text.strip() not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text.strip()
    return check


def _selector(text: str) -> Selector | None:
    """A Calico selector; empty means none (not all(), which would select every node)."""
    if not text.strip():
        return None
    try:
        return parse_selector(text)
    except SelectorError as e:  # including one nested or long enough to exhaust the stack
        raise ValueError(str(e)) from None


@attrs.frozen
class Option:
    name: str
    key: str  # in the TOML file: "section.key"
    env: tuple[str, ...]
    parse: Callable[[str], Any]
    default: str | None
    help: str
    metavar: str = "VALUE"

    @property
    def switch(self) -> bool:
        """A boolean that is off by default, given as a bare flag (one that is on by default
        takes a value, so that a flag can turn it off)."""
        return self.parse is _boolean and self.default == "false"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def many(self) -> bool:
        """Takes a comma-separated list (a TOML array in the file)."""
        return self.parse in (_endpoints, _ips, _networks)


OPTIONS = (
    Option("etcd_endpoints", "etcd.endpoints", ("ETCD_ENDPOINTS",),
           _endpoints, "http://127.0.0.1:2379",
           "comma-separated etcd URLs",
           "URLS"),
    Option("etcd_ca_cert_file", "etcd.ca_cert_file", ("ETCD_CA_CERT_FILE",),
           _file, None,
           "CA certificate (PEM)",
           "PATH"),
    Option("etcd_cert_file", "etcd.cert_file", ("ETCD_CERT_FILE",),
           _file, None,
           "client certificate (PEM)",
           "PATH"),
    Option("etcd_key_file", "etcd.key_file", ("ETCD_KEY_FILE",),
           _file, None,
           "client key (PEM)",
           "PATH"),
    Option("min", "policy.min", ("ROUTE_REFLECTOR_MIN",),
           _at_least(int, 0), "3",
           "least RRs per zone",
           "N"),
    Option("max", "policy.max", ("ROUTE_REFLECTOR_MAX",),
           _at_least(int, 0), "25",
           "most RRs per zone",
           "N"),
    Option("ratio", "policy.ratio", ("ROUTE_REFLECTOR_RATIO",),
           _fraction, "0.005",
           "RRs per eligible node",
           "R"),
    Option("node_label", "policy.node_label", ("ROUTE_REFLECTOR_NODE_LABEL",),
           _label, "calico-route-reflector=",
           "label of RR nodes, key=value",
           "KEY=VALUE"),
    Option("zone_label", "policy.zone_label", ("ROUTE_REFLECTOR_ZONE_LABEL",),
           _zone_label, "",
           "node label whose value is the zone (empty: one zone)",
           "KEY"),
    Option("cluster_id", "policy.cluster_id", ("ROUTE_REFLECTOR_CLUSTER_ID",),
           str, "224.0.0.%d",
           "cluster ID template, an IPv4 address with %d",
           "TEMPLATE"),
    Option("topology", "policy.topology", ("ROUTE_REFLECTOR_TOPOLOGY",),
           str, "simple",
           f"mesh topology: {', '.join(TOPOLOGIES)}",
           "NAME"),
    Option("client_rrs", "policy.client_rrs", ("RRWATCH_CLIENT_RRS",),
           _at_least(int, 1), "3",
           "RRs each client peers with in the multi topology",
           "K"),
    Option("exclude", "policy.exclude", ("RRWATCH_EXCLUDE",),
           _selector, "",
           "Calico selector of nodes that must never be RRs",
           "SELECTOR"),
    Option("prefer", "policy.prefer", ("RRWATCH_PREFER",),
           _selector, "",
           "Calico selector of nodes to promote first and demote last",
           "SELECTOR"),
    Option("max_node_writes", "policy.max_node_writes", ("RRWATCH_MAX_NODE_WRITES",),
           _at_least(int, 1), "200",
           "most node writes per step of a plan",
           "N"),
    Option("max_demotions", "policy.max_demotions", ("RRWATCH_MAX_DEMOTIONS",),
           _at_least(int, 1), "1",
           "most RR demotions per step of a plan",
           "N"),
    # Local bounds: the policy object in etcd can neither set nor raise these.
    Option("policy_object", "policy.object", ("RRWATCH_POLICY_OBJECT",),
           _boolean, "true",
           "apply the policy object in etcd (false: only the local policy counts)",
           "BOOL"),
    Option("max_rr_fraction", "policy.max_rr_fraction", ("RRWATCH_MAX_RR_FRACTION",),
           _fraction, "0.5",
           "most RRs as a fraction of a zone's eligible nodes, whatever the policy object says",
           "F"),
    Option("max_zones", "policy.max_zones", ("RRWATCH_MAX_ZONES",),
           _at_least(int, 1), "16",
           "most zones that get RRs of their own, whatever the policy object says",
           "N"),
    Option("debounce", "reconcile.debounce", ("RRWATCH_DEBOUNCE",),
           _at_least(_finite, 0), "0.1",
           "seconds to coalesce events before planning",
           "SECONDS"),
    Option("settle", "reconcile.settle", ("RRWATCH_SETTLE",),
           _at_least(_finite, 0), "10",
           "seconds new sessions get before old ones are removed",
           "SECONDS"),
    Option("etcd_timeout", "etcd.timeout", ("RRWATCH_ETCD_TIMEOUT",),
           _at_least(_finite, 0), "5",
           "seconds an etcd request may take",
           "SECONDS"),
    Option("watch_timeout", "etcd.watch_timeout", ("RRWATCH_WATCH_TIMEOUT",),
           _at_least(_finite, 0.1), "60",
           "seconds a silent watch stream is trusted before it is reopened",
           "SECONDS"),
    Option("probe_interval", "etcd.probe_interval", ("RRWATCH_PROBE_INTERVAL",),
           _at_least(_finite, 0.1), "5",
           "seconds between reads that check the watches' etcd member still serves",
           "SECONDS"),
    Option("check_interval", "etcd.check_interval", ("RRWATCH_CHECK_INTERVAL",),
           _at_least(_finite, 1), "300",
           "seconds between anti-entropy comparisons of the model with etcd",
           "SECONDS"),
    Option("lease_ttl", "etcd.lease_ttl", ("RRWATCH_LEASE_TTL",),
           _at_least(int, 2, MAX_LEASE_TTL), "10",
           "seconds a dead instance keeps leadership and its registration",
           "SECONDS"),
    Option("prefix", "etcd.prefix", ("RRWATCH_PREFIX",),
           _prefix, "/rrwatch/v1/",
           "etcd key prefix of rrwatch's own keys (the leader key, the policy object)",
           "PREFIX"),
    Option("register_ip", "host.register_ip", ("RRWATCH_REGISTER_IP",),
           _ips, "",
           "register this host as a route reflector with these addresses (one IPv4, one IPv6)"
           " while running",
           "IP[,IP]"),
    Option("register_cluster_id", "host.register_cluster_id", ("RRWATCH_REGISTER_CLUSTER_ID",),
           _cluster_id, "",
           "cluster ID in this host's registration",
           "ID"),
    Option("rr_host_prefixes", "host.allowed_prefixes", ("RRWATCH_RR_HOST_PREFIXES",),
           _networks, "",
           "comma-separated CIDR prefixes: RR host registrations outside them are refused"
           " (empty: any address)",
           "CIDR[,CIDR]"),
    Option("bird_config", "bird.config", ("RRWATCH_BIRD_CONFIG",),
           _bird_config, "",
           "RR host mode: keep this BIRD 2 configuration file for the registered addresses",
           "PATH"),
    Option("bird_socket", "bird.socket", ("RRWATCH_BIRD_SOCKET",),
           str, "/run/bird/bird.ctl",
           "BIRD's control socket: reloads, and session states for metrics and status",
           "PATH"),
    Option("bird_include", "bird.include", ("RRWATCH_BIRD_INCLUDE",),
           _include, "",
           "a file of your own that the BIRD configuration includes (logging, other peers)",
           "PATH"),
    Option("metrics_address", "metrics.address", ("RRWATCH_METRICS_ADDRESS",),
           _address, "",
           "serve Prometheus metrics on this host:port",
           "HOST:PORT"),
    Option("dry_run", "dry_run", ("RRWATCH_DRY_RUN",),
           _boolean, "false",
           "plan but never write",
           "BOOL"),
    Option("log_format", "log.format", ("RRWATCH_LOG_FORMAT",),
           _choice(FORMATS), "text",
           f"log lines as {' or '.join(FORMATS)}",
           "FORMAT"),
)
BY_KEY = {option.key: option for option in OPTIONS}
# The [policy] options, by the field of Policy or Limits each sets (zone_label sets the model's).
POLICY_FIELDS = {"node_label": "rr_label", "ratio": "ratio", "min": "min_rrs", "max": "max_rrs",
                 "cluster_id": "cluster_id_template", "topology": "topology",
                 "client_rrs": "client_rrs", "exclude": "exclude", "prefer": "prefer"}
LIMIT_FIELDS = {"max_node_writes": "node_writes", "max_demotions": "demotions"}


def text_of(value: Any, option: Option) -> str:
    """A TOML (or JSON) value as the option's text; ValueError for a type it cannot take."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if option.many and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    kinds: dict[type, str] = {list: "an array", dict: "a table"}
    kind = kinds.get(type(value), type(value).__name__)
    raise ValueError(f"{kind} is not a value of this key")
