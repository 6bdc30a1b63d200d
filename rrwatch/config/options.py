"""One frozen Config, from a TOML file, the environment and flags, each over the one before.

Every option is declared once, in OPTIONS: its key in the file, its environment names (the
seeds' names first), its flag, its parser and its default, written as it would be in the
environment. Every problem is reported at once, in one ConfigError, each naming its source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from rrwatch.config import values
from rrwatch.core.breaks import MODES
from rrwatch.core.policy import TOPOLOGIES
from rrwatch.logs import FORMATS

# The longest lease an instance asks for (RRWATCH_LEASE_TTL's bound): a leader key on a longer
# one was not put there by rrwatch.
MAX_LEASE_TTL = 300


@attrs.frozen
class Option:
    name: str
    key: str  # in the TOML file: "section.key"
    env: tuple[str, ...]
    parse: Callable[[str], Any]
    default: str | None
    help: str
    metavar: str = "VALUE"
    commands: tuple[str, ...] = ()  # the commands that take it as a flag (empty: all)
    flag_name: str = ""  # its flag, when not the name

    @property
    def switch(self) -> bool:
        """A boolean that is off by default, given as a bare flag (one that is on by default
        takes a value, so that a flag can turn it off)."""
        return self.parse is values.boolean and self.default == "false"

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.name.replace("_", "-"))

    @property
    def many(self) -> bool:
        """Takes a comma-separated list (a TOML array in the file)."""
        return self.parse in (values.endpoints, values.ips, values.networks, values.paths)


OPTIONS = (
    Option("etcd_endpoints", "etcd.endpoints", ("ETCD_ENDPOINTS",),
           values.endpoints, "http://127.0.0.1:2379",
           "comma-separated etcd URLs",
           "URLS"),
    Option("etcd_ca_cert_file", "etcd.ca_cert_file", ("ETCD_CA_CERT_FILE",),
           values.file, None,
           "CA certificate (PEM)",
           "PATH"),
    Option("etcd_cert_file", "etcd.cert_file", ("ETCD_CERT_FILE",),
           values.file, None,
           "client certificate (PEM)",
           "PATH"),
    Option("etcd_key_file", "etcd.key_file", ("ETCD_KEY_FILE",),
           values.file, None,
           "client key (PEM)",
           "PATH"),
    # The password itself only from ETCD_PASSWORD (loader.PASSWORD_ENV), never a file's key
    # or a flag, which others could read in a config file or a process list.
    Option("etcd_username", "etcd.username", ("ETCD_USERNAME",),
           values.user, "",
           "etcd user name, for etcd with auth on (its password: ETCD_PASSWORD, or the"
           " password file)",
           "NAME"),
    Option("etcd_password_file", "etcd.password_file", ("RRWATCH_ETCD_PASSWORD_FILE",),
           values.file, None,
           "file holding the etcd user's password (its first line)",
           "PATH"),
    Option("min", "policy.min", ("ROUTE_REFLECTOR_MIN",),
           values.at_least(int, 0), "3",
           "least RRs per zone",
           "N"),
    Option("max", "policy.max", ("ROUTE_REFLECTOR_MAX",),
           values.at_least(int, 0), "25",
           "most RRs per zone",
           "N"),
    Option("ratio", "policy.ratio", ("ROUTE_REFLECTOR_RATIO",),
           values.fraction, "0.005",
           "RRs per eligible node",
           "R"),
    Option("node_label", "policy.node_label", ("ROUTE_REFLECTOR_NODE_LABEL",),
           values.label, "calico-route-reflector=",
           "label of RR nodes, key=value",
           "KEY=VALUE"),
    Option("zone_label", "policy.zone_label", ("ROUTE_REFLECTOR_ZONE_LABEL",),
           values.zone_label, "",
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
           values.at_least(int, 1), "3",
           "RRs each client peers with in the multi topology",
           "K"),
    Option("exclude", "policy.exclude", ("RRWATCH_EXCLUDE",),
           values.selector, "",
           "Calico selector of nodes that must never be RRs",
           "SELECTOR"),
    Option("prefer", "policy.prefer", ("RRWATCH_PREFER",),
           values.selector, "",
           "Calico selector of nodes to promote first and demote last",
           "SELECTOR"),
    Option("max_node_writes", "policy.max_node_writes", ("RRWATCH_MAX_NODE_WRITES",),
           values.at_least(int, 1), "200",
           "most node writes per step of a plan",
           "N"),
    Option("max_demotions", "policy.max_demotions", ("RRWATCH_MAX_DEMOTIONS",),
           values.at_least(int, 1), "1",
           "most RR demotions and cluster-ID changes per settle time (other breaks go on"
           " meanwhile)",
           "N"),
    # Local bounds: the policy object in etcd can neither set nor raise these.
    Option("policy_object", "policy.object", ("RRWATCH_POLICY_OBJECT",),
           values.boolean, "true",
           "apply the policy object in etcd (false: only the local policy counts)",
           "BOOL"),
    Option("max_rr_fraction", "policy.max_rr_fraction", ("RRWATCH_MAX_RR_FRACTION",),
           values.fraction, "0.5",
           "most RRs as a fraction of a zone's eligible nodes, whatever the policy object says",
           "F"),
    Option("max_zones", "policy.max_zones", ("RRWATCH_MAX_ZONES",),
           values.at_least(int, 1), "16",
           "most zones that get RRs of their own, whatever the policy object says",
           "N"),
    Option("debounce", "reconcile.debounce", ("RRWATCH_DEBOUNCE",),
           values.at_least(values.finite, 0), "0.1",
           "seconds to coalesce events before planning",
           "SECONDS"),
    Option("settle", "reconcile.settle", ("RRWATCH_SETTLE",),
           values.at_least(values.finite, 0), "10",
           "seconds new sessions get before old ones are removed; where they are reported,"
           " how long they must have been Established (the dwell)",
           "SECONDS"),
    Option("verify_sessions", "reconcile.verify_sessions", ("RRWATCH_VERIFY_SESSIONS",),
           values.choice(MODES), "auto",
           "a break waits for the sessions replacing it to be reported Established: require"
           " (hold while a report is missing), auto (where reports exist; the timer elsewhere),"
           " off",
           "MODE"),
    Option("etcd_timeout", "etcd.timeout", ("RRWATCH_ETCD_TIMEOUT",),
           values.at_least(values.finite, 0), "5",
           "seconds an etcd request may take",
           "SECONDS"),
    Option("watch_timeout", "etcd.watch_timeout", ("RRWATCH_WATCH_TIMEOUT",),
           values.at_least(values.finite, 0.1), "60",
           "seconds a silent watch stream is trusted before it is reopened",
           "SECONDS"),
    Option("probe_interval", "etcd.probe_interval", ("RRWATCH_PROBE_INTERVAL",),
           values.at_least(values.finite, 0.1), "5",
           "seconds between reads that check the watches' etcd member still serves",
           "SECONDS"),
    Option("check_interval", "etcd.check_interval", ("RRWATCH_CHECK_INTERVAL",),
           values.at_least(values.finite, 1), "300",
           "seconds between anti-entropy comparisons of the model with etcd",
           "SECONDS"),
    Option("lease_ttl", "etcd.lease_ttl", ("RRWATCH_LEASE_TTL",),
           values.at_least(int, 2, MAX_LEASE_TTL), "10",
           "seconds a dead instance keeps leadership and its registration",
           "SECONDS"),
    Option("prefix", "etcd.prefix", ("RRWATCH_PREFIX",),
           values.prefix, "/rrwatch/v1/",
           "etcd key prefix of rrwatch's own keys (the leader key, the policy object)",
           "PREFIX"),
    Option("register_ip", "host.register_ip", ("RRWATCH_REGISTER_IP",),
           values.ips, "",
           "register this host as a route reflector with these addresses (one IPv4, one IPv6)"
           " while running",
           "IP[,IP]"),
    Option("register_cluster_id", "host.register_cluster_id", ("RRWATCH_REGISTER_CLUSTER_ID",),
           values.cluster_id, "",
           "cluster ID in this host's registration",
           "ID"),
    Option("rr_host_prefixes", "host.allowed_prefixes", ("RRWATCH_RR_HOST_PREFIXES",),
           values.networks, "",
           "comma-separated CIDR prefixes: RR host registrations outside them are refused"
           " (empty: any address)",
           "CIDR[,CIDR]"),
    Option("bird_config", "bird.config", ("RRWATCH_BIRD_CONFIG",),
           values.bird_config, "",
           "RR host mode: keep this BIRD 2 configuration file for the registered addresses",
           "PATH"),
    Option("bird_socket", "bird.socket", ("RRWATCH_BIRD_SOCKET",),
           str, "/run/bird/bird.ctl",
           "BIRD's control socket: reloads, and session states for metrics and status",
           "PATH"),
    Option("bird_include", "bird.include", ("RRWATCH_BIRD_INCLUDE",),
           values.include, "",
           "a file of your own that the BIRD configuration includes (logging, other peers)",
           "PATH"),
    Option("report_node", "report.node", ("RRWATCH_REPORT_NODE",),
           values.node_name, "",
           "`rrwatch report`: the Calico node whose BIRD sessions it reports (empty: the host"
           " name)",
           "NAME", ("report",), "node"),
    Option("report_sockets", "report.sockets", ("RRWATCH_REPORT_SOCKETS",),
           values.paths, "/var/run/calico/bird.ctl,/var/run/calico/bird6.ctl",
           "`rrwatch report`: the BIRD control sockets to read (calico-node's IPv4 and IPv6"
           " BIRDs; a flag per socket)",
           "PATH", ("report",), "socket"),
    Option("report_interval", "report.interval", ("RRWATCH_REPORT_INTERVAL",),
           values.at_least(values.finite, 0.1, 60), "2",
           "`rrwatch report`: seconds between reads of BIRD's sessions (one command per socket)",
           "SECONDS", ("report",)),
    Option("metrics_address", "metrics.address", ("RRWATCH_METRICS_ADDRESS",),
           values.address, "",
           "serve Prometheus metrics on this host:port",
           "HOST:PORT"),
    Option("dry_run", "dry_run", ("RRWATCH_DRY_RUN",),
           values.boolean, "false",
           "plan but never write",
           "BOOL"),
    Option("log_format", "log.format", ("RRWATCH_LOG_FORMAT",),
           values.choice(FORMATS), "text",
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
