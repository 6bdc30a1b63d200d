"""The parsers of option values: text in, a value out, ValueError with a one-line reason."""

from __future__ import annotations

import ipaddress
import math
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs

from rrwatch.core.calico_api import label_problems
from rrwatch.core.model import RRLabel
from rrwatch.core.selector import Selector, SelectorError
from rrwatch.core.selector import parse as parse_selector
from rrwatch.core.validate import is_node_name


def endpoints(text: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in text.split(",") if part.strip())
    if not urls:
        raise ValueError("no endpoint given")
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s)://host:port URL")
        parts.port  # noqa: B018 - raises ValueError for a bad port
    return urls


def file(text: str) -> str:
    """A file rrwatch reads; whether it can, and what is in it, is checked with the others."""
    return text.strip()


def label(text: str) -> RRLabel:
    """`key=value`, as Kubernetes and Calico's API take labels (core.calico_api)."""
    key, _, value = text.partition("=")
    if problem := next(label_problems(key, value), None):
        raise ValueError(problem)
    return RRLabel(key, value)


def zone_label(text: str) -> str:
    if text and (problem := next(label_problems(text, ""), None)):
        raise ValueError(problem)
    return text


def finite(text: str) -> float:
    """A float, but not nan or ±inf, which pass or break every comparison made with them."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()!r} is not a finite number")
    return value


def at_least(parse: Callable[[str], Any], low: float, high: float = math.inf
              ) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        value = parse(text)
        if value < low:
            raise ValueError(f"{text.strip()} is less than {low}")
        if value > high:
            raise ValueError(f"{text.strip()} is more than {high}")
        return value
    return check


def fraction(text: str) -> float:
    value = finite(text)
    if not 0 < value <= 1:
        raise ValueError(f"{text.strip()} is not in (0, 1]")
    return value


def ips(text: str) -> tuple[str, ...]:
    """Comma-separated addresses, at most one IPv4 and one IPv6."""
    ips = tuple(str(ipaddress.ip_address(part.strip())) for part in text.split(",")
                if part.strip())
    if len({ipaddress.ip_address(ip).version for ip in ips}) < len(ips):
        raise ValueError(f"{text!r} has more than one address of a family")
    return ips


def networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDR prefixes (an address alone is a /32 or /128); empty for none."""
    out = []
    for part in (part.strip() for part in text.split(",")):
        if part:
            try:
                out.append(ipaddress.ip_network(part))
            except ValueError as e:
                raise ValueError(f"{part!r} is not a CIDR prefix ({e})") from None
    return tuple(out)


def node_name(text: str) -> str:
    """A Calico node's name (a DNS subdomain, as Kubernetes names nodes); empty: the host's."""
    text = text.strip()
    if text and not is_node_name(text):
        raise ValueError(f"{text!r} is not a node name (lower-case DNS subdomain)")
    return text


@attrs.frozen
class Credentials:
    """An etcd user. The password never appears in a repr, a log line or a message."""

    user: str
    password: str = attrs.field(repr=False)


def user(text: str) -> str:
    """An etcd user name; empty: none (etcd without auth)."""
    text = text.strip()
    if not text.isprintable():
        raise ValueError(f"{text!r} is not a user name (control characters)")
    return text


def paths(text: str) -> tuple[str, ...]:
    """Comma-separated absolute paths."""
    paths = tuple(part.strip() for part in text.split(",") if part.strip())
    if not paths or not all(os.path.isabs(path) for path in paths):
        raise ValueError(f"{text!r} is not a comma-separated list of absolute paths")
    return paths


def bird_config(text: str) -> str:
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


def include(text: str) -> str:
    """A path for BIRD's `include "...";`: BIRD strings have no escapes, so a quote, a
    backslash or a control character would end the string or the line early."""
    text = text.strip()
    if any(c in '"\\' or not c.isprintable() for c in text):
        raise ValueError(f"{text!r} holds a quote, a backslash or a control character")
    return text


def cluster_id(text: str) -> str:
    return str(ipaddress.IPv4Address(text.strip())) if text.strip() else ""


def prefix(text: str) -> str:
    if not text.startswith("/") or not text.endswith("/") or text.startswith("/calico/"):
        raise ValueError(f"{text!r} is not a key prefix like /rrwatch/v1/ outside /calico/")
    return text


def address(text: str) -> tuple[str, int] | None:
    """host:port to listen on ([::1]:9000 for IPv6); empty for none."""
    if not text.strip():
        return None
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text.strip() not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text.strip()
    return check


def selector(text: str) -> Selector | None:
    """A Calico selector; empty means none (not all(), which would select every node)."""
    if not text.strip():
        return None
    try:
        return parse_selector(text)
    except SelectorError as e:  # including one nested or long enough to exhaust the stack
        raise ValueError(str(e)) from None
