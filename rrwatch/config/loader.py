"""Loading the configuration: the TOML file, then the environment, then flags, each option
parsed by its row in `options`; every problem found at once, as one ConfigError."""

from __future__ import annotations

import grp
import ipaddress
import os
import shutil
import ssl
import stat
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rrwatch import certs
from rrwatch.config.options import BY_KEY, LIMIT_FIELDS, OPTIONS, POLICY_FIELDS, text_of
from rrwatch.config.values import Credentials
from rrwatch.core.plan import Limits
from rrwatch.core.policy import Policy, PolicyError
from rrwatch.errors import ConfigError
from rrwatch.tls import TlsFiles, context, read_regular, shown

DEFAULT_FILE = "/etc/rrwatch/rrwatch.toml"  # read when it exists and no other file is named
FILE_ENV = "RRWATCH_CONFIG"
FILE_LIMIT = 1 << 20  # bytes of TOML: a config file is a few hundred
PASSWORD_ENV = "ETCD_PASSWORD"  # Calico's name; the one option outside the table (options.py)
PASSWORD_LIMIT = 4096  # bytes of a password file


@attrs.frozen
class Timing:
    debounce: float = 0.1  # coalesce a burst of events into one plan
    settle: float = 10.0  # time new sessions get before old ones are removed (the dwell)
    verify: str = "auto"  # how breaks wait for reported sessions (core.breaks.MODES)


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
    # `rrwatch report`: the node, its BIRDs' control sockets, and how often to read them.
    report_node: str = ""  # empty: the host name
    report_sockets: tuple[str, ...] = ("/var/run/calico/bird.ctl", "/var/run/calico/bird6.ctl")
    report_interval: float = 2.0
    warnings: tuple[str, ...] = ()  # findings that do not stop rrwatch, one line each
    etcd_auth: Credentials | None = None  # the etcd user, when etcd has auth on

    @property
    def leader_key(self) -> str:
        return self.prefix + "leader"

    @property
    def sessions_prefix(self) -> str:
        """Where the session reports live: `<prefix>sessions/<speaker>`."""
        return self.prefix + "sessions/"

    @property
    def policy_key(self) -> str:
        """The optional policy object in etcd, which overrides the [policy] options it sets."""
        return self.prefix + "policy"


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
        if path and option.name in from_file:
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
    auth = credentials(values["etcd_username"], environ.get(PASSWORD_ENV) or None,  # "": unset
                       values["etcd_password_file"], problems)
    policy = None
    try:
        policy = Policy(**{field: values[name] for name, field in POLICY_FIELDS.items()})
    except PolicyError as e:
        problems.append(f"route reflector policy: {e}")
    if problems or policy is None:  # no policy means a problem says why
        raise ConfigError(problems)
    return Config(
        etcd_endpoints=values["etcd_endpoints"],
        tls=tls,
        zone_label=values["zone_label"],
        policy=policy,
        timing=Timing(debounce=values["debounce"], settle=values["settle"],
                      verify=values["verify_sessions"]),
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
        report_node=values["report_node"],
        report_sockets=values["report_sockets"],
        report_interval=values["report_interval"],
        warnings=tuple(warnings),
        etcd_auth=auth,
    )


def credentials(user: str, password: str | None, password_file: str | None,
                problems: list[str]) -> Credentials | None:
    """The etcd user, if one is set: its password from the environment or from the first line
    of the file. Problems never quote the password."""
    if password_file:
        if password is not None:
            problems.append(f"{PASSWORD_ENV} and the password file are both set: set one")
            return None
        try:
            text = read_regular(password_file, PASSWORD_LIMIT).decode("utf-8")
        except OSError as e:
            problems.append(f"{shown(password_file)}: {e.strerror}")
            return None
        except UnicodeDecodeError:
            problems.append(f"{shown(password_file)}: not UTF-8 text")
            return None
        password = text.split("\n", 1)[0].rstrip("\r")
    if not user:
        if password is not None:
            problems.append(f"a password is set ({PASSWORD_ENV} or the password file) but no"
                            " user name (ETCD_USERNAME, [etcd] username)")
        return None
    if not password:
        problems.append(f"ETCD_USERNAME {shown(user)} needs a password: {PASSWORD_ENV} or a"
                        " password file ([etcd] password_file, RRWATCH_ETCD_PASSWORD_FILE)")
        return None
    return Credentials(user, password)
