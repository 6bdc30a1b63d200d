"""One frozen Config, from a TOML file, the environment and flags, each over the one before.

Every option is declared once, in OPTIONS: its key in the file, its environment names (the
seeds' names first), its flag, its parser and its default, written as it would be in the
environment. Every problem is reported at once, in one ConfigError, each naming its source.
"""

from __future__ import annotations

import grp
import ipaddress
import math
import os
import re
import shutil
import ssl
import stat
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rrwatch import certs
from rrwatch.etcd import MAX_LEASE_TTL
from rrwatch.logs import FORMATS
from rrwatch.mesh import TOPOLOGIES, Policy, PolicyError
from rrwatch.model import RRLabel
from rrwatch.plan import Limits
from rrwatch.reconcile import Timing
from rrwatch.selector import Selector, SelectorError
from rrwatch.selector import parse as parse_selector
from rrwatch.tls import TlsFiles, context, read_regular, shown

# Exit status for configuration and TLS problems (sysexits.h EX_CONFIG); systemd does not
# restart on it when the unit says RestartPreventExitStatus=78.
EX_CONFIG = 78

DEFAULT_FILE = "/etc/rrwatch/rrwatch.toml"  # read when it exists and no other file is named
FILE_ENV = "RRWATCH_CONFIG"
FILE_LIMIT = 1 << 20  # bytes of TOML: a config file is a few hundred

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")


class ConfigError(Exception):
    """One or more configuration problems, each naming its source."""

    def __init__(self, problems: list[str]) -> None:
        problems = [_one_line(problem) for problem in problems]
        super().__init__("; ".join(problems))
        self.problems = problems


def _one_line(text: str) -> str:
    """`text` with every character that is not printable (a newline, an escape) shown as its
    escape, so that no value can forge a line of stderr or of the log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


def _at_least(parse: Callable[[str], Any], low: int, high: float = math.inf
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


@attrs.frozen
class Config:
    etcd_endpoints: tuple[str, ...]
    tls: TlsFiles | None
    zone_label: str
    policy: Policy
    timing: Timing
    limits: Limits
    etcd_timeout: float
    watch_timeout: float
    probe_interval: float
    check_interval: float
    lease_ttl: int
    prefix: str
    register_ip: tuple[str, ...]
    register_cluster_id: str
    bird_config: str
    bird_socket: str
    bird_include: str
    metrics_address: tuple[str, int] | None
    dry_run: bool
    log_format: str = "text"
    file: str | None = None  # the TOML file read, if any
    # Local bounds on the policy object (the object cannot set them).
    policy_object: bool = True
    max_rr_fraction: float = 0.5
    max_zones: int = 64
    rr_host_prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    warnings: tuple[str, ...] = ()  # findings that do not stop rrwatch, one line each

    @property
    def leader_key(self) -> str:
        return self.prefix + "leader"

    @property
    def policy_key(self) -> str:
        """The optional policy object in etcd, which overrides the [policy] options it sets."""
        return self.prefix + "policy"


def text_of(value: Any, option: Option) -> str:
    """A TOML (or JSON) value as the option's text; ValueError for a type it cannot take."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if option.many and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    kind = {list: "an array", dict: "a table"}.get(type(value), type(value).__name__)
    raise ValueError(f"{kind} is not a value of this key")


def read_file(path: str) -> tuple[dict[str, str], list[str]]:
    """The options a TOML file sets (name -> text), and its problems, each naming the file.

    Blocking, but never for long: a FIFO, a device or a file over FILE_LIMIT is one problem.
    """
    try:
        text = read_regular(path, FILE_LIMIT).decode("utf-8")
        document = tomllib.loads(text)
    except OSError as e:
        return {}, [f"{shown(path)}: {e.strerror}"]
    except RecursionError:  # tomllib recurses on each nested inline table or array
        return {}, [f"{shown(path)}: not valid TOML (nested too deeply)"]
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError, an integer of 5,000 digits
        return {}, [f"{shown(path)}: not valid TOML ({e})"]
    values, problems = {}, []
    for key, value in _flatten(document):
        option = BY_KEY.get(key)
        if option is None:
            problems.append(f"{shown(path)}: unknown key {_key_text(key)}")
            continue
        try:
            values[option.name] = text_of(value, option)
        except ValueError as e:
            problems.append(f"{shown(path)}: {key}: {e}")
    return values, problems


def _key_text(key: str, most: int = 100) -> str:
    """A key for a message: shown safely, and cut short when it is long."""
    if len(key) <= most:
        return shown(key)
    return f"{shown(key[:most])}... ({len(key)} characters)"


def _flatten(document: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(section.key, value) pairs; a table that is not a known section is flattened too, so
    that its keys are reported as unknown one by one. Without recursion: a header such as
    [a.a.a...] nests tables as deep as it likes."""
    out = []
    todo = [("", document)]
    while todo:
        within, table = todo.pop()
        for key, value in table.items():
            name = f"{within}{key}"
            if isinstance(value, dict) and name not in BY_KEY:
                todo.append((name + ".", value))
            else:
                out.append((name, value))
    return out


def tls_problems(tls: TlsFiles) -> list[str]:
    """Why these files cannot make a TLS client: one line per problem, naming the file."""
    problems = list(certs.check(tls).problems)
    if not problems:
        try:
            context(tls)
        except (OSError, ssl.SSLError) as e:  # what cryptography accepts but OpenSSL does not
            problems.append(
                f"{shown(tls.cert)}: OpenSSL cannot use it with {shown(tls.key)} ({e})")
    return problems


def bird_directory_warning(path: str) -> str | None:
    """A warning when others than the owner may write the directory of the BIRD configuration:
    they could swap the file BIRD checked before rrwatch renames it into place."""
    directory = os.path.dirname(path)
    try:
        st = os.stat(directory)
    except OSError:
        return None  # gone since the check: writing there will say so
    if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    who = " and ".join(name for bit, name in ((stat.S_IWGRP, f"group {group}"),
                                               (stat.S_IWOTH, "others")) if st.st_mode & bit)
    return (f"{shown(directory)}: the BIRD configuration's directory is writable by {who}"
            f" (mode {stat.S_IMODE(st.st_mode):04o}), who could swap a checked configuration"
            " before it is renamed into place; chmod g-w,o-w it")


def load(
    environ: Mapping[str, str] = os.environ,
    flags: Mapping[str, Any] | None = None,
    *,
    default_file: str = DEFAULT_FILE,
    which: Callable[[str], str | None] = shutil.which,
) -> Config:
    """Build the config: defaults, then the TOML file, then the environment, then flags.

    The file is `flags["config"]`, else $RRWATCH_CONFIG, else `default_file` when it exists.
    Flags are strings as typed (or True for a switch); None means not given. `which` finds
    the `bird` that RR host mode needs. Blocking: it reads the file and the TLS files.
    """
    flags = flags or {}
    problems: list[str] = []
    path = flags.get("config") or environ.get(FILE_ENV) or (
        default_file if os.path.exists(default_file) else None)
    from_file: dict[str, str] = {}
    if path:
        from_file, problems = read_file(path)
    known = {env for option in OPTIONS for env in option.env} | {FILE_ENV}
    problems += [f"environment: unknown variable {shown(name)}" for name in sorted(environ)
                 if name.startswith("RRWATCH_") and name not in known]
    values: dict[str, Any] = {}
    for option in OPTIONS:
        # The default stands in for a bad value, so that later checks still see a whole config.
        values[option.name] = None if option.default is None else option.parse(option.default)
        sources = []
        if option.name in from_file:
            sources.append((f"{shown(path)}: {option.key}", from_file[option.name]))
        sources += [(env, environ[env]) for env in option.env if env in environ]
        if flags.get(option.name) is not None:
            sources.append((option.flag, flags[option.name]))
        for source, text in sources[-1:]:  # the last, highest-precedence source decides
            try:
                values[option.name] = option.parse(text) if isinstance(text, str) else text
            except ValueError as e:
                problems.append(f"{source}: {e}")

    if values["register_cluster_id"] and not values["register_ip"]:
        problems.append("RRWATCH_REGISTER_CLUSTER_ID needs RRWATCH_REGISTER_IP")
    warnings = []
    if values["bird_config"]:
        if not values["register_ip"]:
            problems.append("RRWATCH_BIRD_CONFIG needs RRWATCH_REGISTER_IP (the host's addresses)")
        if which("bird") is None:
            problems.append("RRWATCH_BIRD_CONFIG needs BIRD 2: no `bird` on PATH to check"
                            " configurations with")
        if (warning := bird_directory_warning(values["bird_config"])) is not None:
            warnings.append(warning)
    tls = None
    files = [values["etcd_ca_cert_file"], values["etcd_cert_file"], values["etcd_key_file"]]
    if any(files):
        if not all(files):
            problems.append(
                "TLS needs ETCD_CA_CERT_FILE, ETCD_CERT_FILE and ETCD_KEY_FILE together")
        else:
            tls = TlsFiles(*files)
            problems += tls_problems(tls)
    policy = None
    try:
        policy = Policy(**{field: values[name] for name, field in POLICY_FIELDS.items()})
    except PolicyError as e:
        problems.append(f"route reflector policy: {e}")
    if problems:
        raise ConfigError(problems)
    return Config(
        etcd_endpoints=values["etcd_endpoints"],
        tls=tls,
        zone_label=values["zone_label"],
        policy=policy,
        timing=Timing(debounce=values["debounce"], settle=values["settle"]),
        limits=Limits(**{field: values[name] for name, field in LIMIT_FIELDS.items()}),
        etcd_timeout=values["etcd_timeout"],
        watch_timeout=values["watch_timeout"],
        probe_interval=values["probe_interval"],
        check_interval=values["check_interval"],
        lease_ttl=values["lease_ttl"],
        prefix=values["prefix"],
        register_ip=values["register_ip"],
        register_cluster_id=values["register_cluster_id"],
        bird_config=values["bird_config"],
        bird_socket=values["bird_socket"],
        bird_include=values["bird_include"],
        metrics_address=values["metrics_address"],
        dry_run=values["dry_run"],
        log_format=values["log_format"],
        file=path,
        policy_object=values["policy_object"],
        max_rr_fraction=values["max_rr_fraction"],
        max_zones=values["max_zones"],
        rr_host_prefixes=values["rr_host_prefixes"],
        warnings=tuple(warnings),
    )
