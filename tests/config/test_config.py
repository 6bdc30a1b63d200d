"""Config: the seeds' environment names, flags over environment, every problem at once."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re

import pytest

from rrwatch.cli import main as cli
from rrwatch.config import OPTIONS, load
from rrwatch.core.model import RRLabel
from rrwatch.errors import ConfigError, ExitStatus
from rrwatch.testing.pki import issue, make_ca, write_pem
from rrwatch.tls import TlsFiles


def test_defaults_are_the_seeds():
    """With nothing set, the seed operator's defaults apply."""
    config = load({})
    policy = config.policy
    assert (policy.ratio, policy.min_rrs, policy.max_rrs) == (0.005, 3, 25)
    assert policy.cluster_id_template == "224.0.0.%d"
    assert policy.rr_label == RRLabel("calico-route-reflector", "")
    assert (config.zone_label, policy.topology, config.tls) == ("", "simple", None)


def test_seed_environment_names(pki):
    """Each seed variable sets its option."""
    config = load({
        "ETCD_ENDPOINTS": "https://10.0.0.1:2379, https://10.0.0.2:2379",
        "ETCD_CA_CERT_FILE": pki.client.ca,
        "ETCD_CERT_FILE": pki.client.cert,
        "ETCD_KEY_FILE": pki.client.key,
        "ROUTE_REFLECTOR_MIN": "2",
        "ROUTE_REFLECTOR_MAX": "7",
        "ROUTE_REFLECTOR_RATIO": "0.1",
        "ROUTE_REFLECTOR_NODE_LABEL": "route-reflector=true",
        "ROUTE_REFLECTOR_ZONE_LABEL": "topology.kubernetes.io/zone",
        "ROUTE_REFLECTOR_CLUSTER_ID": "10.255.0.%d",
        "ROUTE_REFLECTOR_TOPOLOGY": "simple",
    })
    assert config.etcd_endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert config.tls == TlsFiles(pki.client.ca, pki.client.cert, pki.client.key)
    assert (config.policy.min_rrs, config.policy.max_rrs, config.policy.ratio) == (2, 7, 0.1)
    assert config.policy.rr_label == RRLabel("route-reflector", "true")
    assert config.zone_label == "topology.kubernetes.io/zone"
    assert config.policy.cluster_id(5) == "10.255.0.5"


def test_flags_win_over_environment():
    """A flag overrides the environment variable of the same option."""
    config = load({"ROUTE_REFLECTOR_MIN": "2", "RRWATCH_SETTLE": "3"},
                  {"min": "4", "settle": None, "dry_run": True})
    assert config.policy.min_rrs == 4
    assert config.timing.settle == 3.0
    assert config.dry_run


def test_every_problem_is_reported_at_once():
    """Several bad values give one ConfigError listing each, with its source."""
    with pytest.raises(ConfigError) as error:
        load({"ROUTE_REFLECTOR_MIN": "three", "ETCD_ENDPOINTS": "ftp://x",
              "ETCD_CERT_FILE": "/nonexistent", "RRWATCH_SETLE": "1"}, {"ratio": "x"})
    problems = error.value.problems
    assert any(p.startswith("ROUTE_REFLECTOR_MIN:") for p in problems)
    assert any(p.startswith("ETCD_ENDPOINTS:") for p in problems)
    assert any(p.startswith("TLS needs ETCD_CA_CERT_FILE") for p in problems)
    assert any(p.startswith("--ratio:") for p in problems)
    assert "environment: unknown variable RRWATCH_SETLE" in problems


def test_partial_tls_is_an_error(tmp_path):
    """A client certificate without its key (or CA) is refused, not silently dropped."""
    (tmp_path / "cert").write_text("x")
    with pytest.raises(ConfigError, match="together"):
        load({"ETCD_CERT_FILE": str(tmp_path / "cert")})


@pytest.mark.parametrize("label", ["", "-bad=x", "ok=not ok", "a/b/c=x"])
def test_bad_node_labels(label):
    """A node label that is not a valid Kubernetes label key=value is refused."""
    with pytest.raises(ConfigError, match="ROUTE_REFLECTOR_NODE_LABEL"):
        load({"ROUTE_REFLECTOR_NODE_LABEL": label})


@pytest.mark.parametrize("command", ["run", "report"])
def test_every_option_has_a_flag_on_the_commands_that_take_it(capsys, command):
    """`rrwatch <command> --help` lists a flag for every option the command takes, and none
    for the options of other commands only (`report`'s --node and --socket)."""
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert "224.0.0.%d" in text
    for option in OPTIONS:
        listed = re.search(rf"^ *{re.escape(option.flag)} ", text, re.M) is not None
        assert listed == (not option.commands or command in option.commands), option.flag


def test_cli_config_error_is_one_line_and_exit_78(monkeypatch, capsys):
    """A config problem ends `rrwatch run` with one line on stderr and status 78."""
    monkeypatch.setenv("ROUTE_REFLECTOR_RATIO", "lots")
    assert cli.main(["run"]) == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ROUTE_REFLECTOR_RATIO" in err and "Traceback" not in err


def tls_env(ca: str, cert: str, key: str) -> dict[str, str]:
    return {"ETCD_CA_CERT_FILE": ca, "ETCD_CERT_FILE": cert, "ETCD_KEY_FILE": key}


def test_good_tls_files_load(pki):
    """The test PKI's client files pass the TLS check."""
    assert load(tls_env(pki.client.ca, pki.client.cert, pki.client.key)).tls.cert == pki.client.cert


def _broken_tls(tmp_path, case: str) -> tuple[dict[str, str], str, str]:
    """Client TLS files with one thing wrong; the environment, the file to blame, the reason."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    ca, cert, key = (str(tmp_path / name) for name in ("ca.pem", "client.pem", "client-key.pem"))
    authority = make_ca("rrwatch test CA")
    write_pem(ca, authority[0])
    signer, window, key_of = authority, {}, None
    blame = cert
    if case == "expired":
        window, reason = {"not_before": now - 10 * day, "not_after": now - day}, "expired on"
    elif case == "not-yet-valid":
        window, reason = {"not_before": now + day, "not_after": now + 10 * day}, "not valid until"
    elif case == "wrong-ca":
        signer, reason = make_ca("another CA"), f"not signed by the CA in {ca}"
    elif case == "mismatched-key":
        key_of, reason = issue(*authority, "rrwatch")[1], f"does not match the private key in {key}"
    elif case == "not-pem":
        blame, reason = key, "no valid PEM private key"
    else:  # missing
        blame, reason = str(tmp_path / "absent.pem"), "No such file or directory"
    leaf, leaf_key = issue(*signer, "rrwatch", **window)
    write_pem(cert, leaf)
    write_pem(key, key_of or leaf_key)
    if case == "not-pem":
        (tmp_path / "client-key.pem").write_text("not a key\n")
    return tls_env(ca, cert, blame if case == "missing" else key), blame, reason


TLS_FAILURES = ["expired", "not-yet-valid", "wrong-ca", "mismatched-key", "not-pem", "missing"]


@pytest.mark.parametrize("case", TLS_FAILURES)
def test_tls_failure_is_one_line_and_exit_78(tmp_path, monkeypatch, capsys, case):
    """`rrwatch run` with broken client TLS files: exit 78 and one line that names the file at
    fault and the reason; no traceback."""
    environ, blame, reason = _broken_tls(tmp_path, case)
    for name in [n for n in os.environ if n.startswith(("RRWATCH_", "ETCD_", "ROUTE_"))]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run"]) == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert blame in err and reason in err and "Traceback" not in err


def test_mesh_options():
    """Topology, k, exclude and prefer selectors and churn limits come from the environment."""
    config = load({
        "ROUTE_REFLECTOR_TOPOLOGY": "multi",
        "RRWATCH_CLIENT_RRS": "2",
        "RRWATCH_EXCLUDE": "node-role.kubernetes.io/control-plane == ''",
        "RRWATCH_PREFER": "has(dedicated-rr)",
        "RRWATCH_MAX_NODE_WRITES": "50",
        "RRWATCH_MAX_DEMOTIONS": "2",
    })
    policy = config.policy
    assert (policy.topology, policy.client_rrs) == ("multi", 2)
    assert policy.exclude.matches({"node-role.kubernetes.io/control-plane": ""})
    assert policy.prefer.matches({"dedicated-rr": "yes"}) and not policy.prefer.matches({})
    assert (config.limits.node_writes, config.limits.demotions) == (50, 2)
    assert load({"RRWATCH_EXCLUDE": " "}).policy.exclude is None


def test_bad_mesh_options_name_their_source():
    """A selector that does not parse, k or limits below 1, a template too small for `multi`:
    each problem names its variable."""
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_EXCLUDE": "role == ", "RRWATCH_CLIENT_RRS": "0",
              "RRWATCH_MAX_DEMOTIONS": "0"})
    problems = "\n".join(error.value.problems)
    assert "RRWATCH_EXCLUDE: expected a quoted literal" in problems
    assert "RRWATCH_CLIENT_RRS: 0 is less than 1" in problems
    assert "RRWATCH_MAX_DEMOTIONS: 0 is less than 1" in problems
    with pytest.raises(ConfigError, match="gives only 9 distinct IDs"):
        load({"ROUTE_REFLECTOR_TOPOLOGY": "multi", "ROUTE_REFLECTOR_CLUSTER_ID": "10.0.0.1%d0"})


def test_fault_and_leadership_options():
    config = load({"RRWATCH_LEASE_TTL": "4", "RRWATCH_PROBE_INTERVAL": "0.5",
                   "RRWATCH_CHECK_INTERVAL": "60", "RRWATCH_PREFIX": "/rr/",
                   "RRWATCH_REGISTER_IP": "fd00:0::7", "RRWATCH_REGISTER_CLUSTER_ID": "224.0.0.9",
                   "RRWATCH_METRICS_ADDRESS": "[::1]:9100"})
    assert (config.lease_ttl, config.probe_interval, config.check_interval) == (4, 0.5, 60.0)
    assert (config.leader_key, config.register_ip) == ("/rr/leader", ("fd00::7",))
    assert config.register_cluster_id == "224.0.0.9"
    assert config.metrics_address == ("::1", 9100)
    defaults = load({})
    assert (defaults.leader_key, defaults.register_ip, defaults.metrics_address) == (
        "/rrwatch/v1/leader", (), None)


def _bird_on_path(name: str) -> str | None:
    """A `which` that finds BIRD, so that these tests need no bird binary."""
    return "/usr/sbin/bird" if name == "bird" else None


def test_rr_host_options(tmp_path):
    """RR host mode's addresses, BIRD configuration and socket come from the environment."""
    path = str(tmp_path / "bird.conf")
    config = load({"RRWATCH_REGISTER_IP": "10.0.0.5, fd00::5", "RRWATCH_BIRD_CONFIG": path,
                   "RRWATCH_BIRD_SOCKET": "/sockets/bird.ctl"}, which=_bird_on_path)
    assert config.register_ip == ("10.0.0.5", "fd00::5")
    assert (config.bird_config, config.bird_socket) == (path, "/sockets/bird.ctl")
    assert load({}).bird_socket == "/run/bird/bird.ctl"  # Debian's bird2


@pytest.mark.parametrize(("environ", "problem"), [
    ({"RRWATCH_REGISTER_IP": "10.0.0.5,10.0.0.6"}, "more than one address of a family"),
    ({"RRWATCH_BIRD_CONFIG": "/etc/bird/bird.conf"}, "needs RRWATCH_REGISTER_IP"),
    ({"RRWATCH_REGISTER_IP": "10.0.0.5", "RRWATCH_BIRD_CONFIG": "/no/such/dir/bird.conf"},
     "the directory of '/no/such/dir/bird.conf' does not exist"),
    ({"RRWATCH_REGISTER_IP": "10.0.0.5", "RRWATCH_BIRD_CONFIG": "/etc/bird/bird.conf"},
     "no `bird` on PATH"),
])
def test_rr_host_option_problems(environ, problem):
    """Each RR host mode misconfiguration is refused, saying what is missing."""
    which = (lambda name: None) if "PATH" in problem else _bird_on_path
    with pytest.raises(ConfigError, match=problem):
        load(environ, which=which)


def test_bad_fault_and_leadership_options_name_their_source():
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_LEASE_TTL": "1", "RRWATCH_PREFIX": "/calico/rr/",
              "RRWATCH_REGISTER_IP": "10.0.0.300", "RRWATCH_METRICS_ADDRESS": "localhost"})
    problems = error.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "RRWATCH_LEASE_TTL", "RRWATCH_PREFIX", "RRWATCH_REGISTER_IP", "RRWATCH_METRICS_ADDRESS"]
    with pytest.raises(ConfigError, match="RRWATCH_REGISTER_CLUSTER_ID needs"):
        load({"RRWATCH_REGISTER_CLUSTER_ID": "224.0.0.9"})


TOML = """\
[etcd]
endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
lease_ttl = 15

[policy]
min = 2
topology = "zoned"
zone_label = "topology.kubernetes.io/zone"

[host]
register_ip = ["10.0.0.5"]

[metrics]
address = "127.0.0.1:9100"

[log]
format = "json"
"""


def test_toml_file_sets_options(tmp_path):
    """Every table of the file lands on its option; what it leaves out keeps its default."""
    path = tmp_path / "rrwatch.toml"
    path.write_text(TOML)
    config = load({"RRWATCH_CONFIG": str(path)})
    assert config.etcd_endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert (config.lease_ttl, config.policy.min_rrs, config.policy.topology) == (15, 2, "zoned")
    assert config.zone_label == "topology.kubernetes.io/zone"
    assert config.register_ip == ("10.0.0.5",)
    assert (config.metrics_address, config.log_format) == (("127.0.0.1", 9100), "json")
    assert (config.policy.max_rrs, config.file) == (25, str(path))


def test_file_then_environment_then_flags(tmp_path):
    """One option set at every level: each level overrides the one below it."""
    path = tmp_path / "rrwatch.toml"
    path.write_text("[policy]\nmin = 2\nmax = 9\nratio = 0.2\n")
    environ = {"RRWATCH_CONFIG": str(path), "ROUTE_REFLECTOR_MAX": "8",
               "ROUTE_REFLECTOR_RATIO": "0.3"}
    config = load(environ, {"ratio": "0.4"})
    assert (config.policy.min_rrs, config.policy.max_rrs, config.policy.ratio) == (2, 8, 0.4)


def test_which_file_is_read(tmp_path):
    """--config over $RRWATCH_CONFIG over the default path, which is read only if it exists."""
    files = {}
    for name, minimum in (("flag", 4), ("env", 5), ("default", 6)):
        files[name] = tmp_path / f"{name}.toml"
        files[name].write_text(f"[policy]\nmin = {minimum}\n")
    default = str(files["default"])
    environ = {"RRWATCH_CONFIG": str(files["env"])}
    assert load(environ, {"config": str(files["flag"])}, default_file=default).policy.min_rrs == 4
    assert load(environ, default_file=default).policy.min_rrs == 5
    assert load({}, default_file=default).policy.min_rrs == 6
    config = load({}, default_file=str(tmp_path / "absent.toml"))
    assert (config.policy.min_rrs, config.file) == (3, None)


def test_file_problems_are_all_reported_with_file_and_key(tmp_path):
    """Unknown keys and tables, values of the wrong type or range: every one is reported,
    each naming the file and the key."""
    path = tmp_path / "rrwatch.toml"
    path.write_text('colour = "blue"\n[policy]\nmin = -1\nmax = [1, 2]\nflavour = 1\n'
                    '[etcd]\nendpoints = "ftp://x"\n[nosuch]\nkey = 1\n')
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_CONFIG": str(path)})
    assert sorted(error.value.problems) == sorted([
        f"{path}: unknown key colour",
        f"{path}: policy.max: an array is not a value of this key",
        f"{path}: unknown key policy.flavour",
        f"{path}: unknown key nosuch.key",
        f"{path}: policy.min: -1 is less than 0",
        f"{path}: etcd.endpoints: 'ftp://x' is not an http(s)://host:port URL",
    ])


@pytest.mark.parametrize(("text", "problem"), [
    ("[policy\nmin = 1\n", "not valid TOML (Expected ']' at the end of a table declaration"),
    (None, "No such file or directory"),
])
def test_unreadable_file_is_one_problem(tmp_path, text, problem):
    path = tmp_path / "rrwatch.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load({}, {"config": str(path)})
    [line] = error.value.problems
    assert line.startswith(f"{path}: {problem}")


def test_cli_reads_the_config_flag(tmp_path, monkeypatch, capsys):
    """`rrwatch run --config FILE` with a bad value in it: exit 78, one line naming file and key."""
    for name in [n for n in __import__("os").environ if n.startswith(("RRWATCH_", "ETCD_"))]:
        monkeypatch.delenv(name)
    path = tmp_path / "rrwatch.toml"
    path.write_text("[policy]\nratio = 7\n")
    assert cli.main(["run", "--config", str(path)]) == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: policy.ratio: 7 is not in (0, 1]" in err


def test_file_keys_are_unique_and_documented():
    """Each option has one file key, in a table named like its neighbours."""
    keys = [option.key for option in OPTIONS]
    assert len(set(keys)) == len(keys)
    assert {key.partition(".")[0] for key in keys if "." in key} == {
        "etcd", "policy", "reconcile", "host", "bird", "report", "metrics", "log"}


def test_reference_documents_every_option():
    """docs/reference.md names each option's file key, environment variables and flag."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "reference.md")) as f:
        text = f.read()
    for option in OPTIONS:
        section, _, key = option.key.rpartition(".")
        cell = f"`[{section}]` `{key}`" if section else f"`{key}`"
        flag = f"`{option.flag}`" if option.switch else f"`{option.flag} {option.metavar}`"
        for name in (cell, flag, *(f"`{env}`" for env in option.env)):
            assert name in text, name


def test_local_bounds_on_the_policy_object():
    """policy.object, max_rr_fraction, max_zones and host.allowed_prefixes: their defaults, and
    values from the environment, a flag and the file's array."""
    defaults = load({})
    assert (defaults.policy_object, defaults.max_rr_fraction, defaults.max_zones) == (
        True, 0.5, 16)
    assert defaults.rr_host_prefixes == ()
    config = load({"RRWATCH_POLICY_OBJECT": "false", "RRWATCH_MAX_RR_FRACTION": "0.25",
                   "RRWATCH_MAX_ZONES": "8",
                   "RRWATCH_RR_HOST_PREFIXES": "10.20.0.0/16, fd00:20::/64,192.0.2.7"})
    assert (config.policy_object, config.max_rr_fraction, config.max_zones) == (False, 0.25, 8)
    assert config.rr_host_prefixes == (ipaddress.ip_network("10.20.0.0/16"),
                                       ipaddress.ip_network("fd00:20::/64"),
                                       ipaddress.ip_network("192.0.2.7/32"))
    assert load({"RRWATCH_POLICY_OBJECT": "no"}, {"policy_object": "true"}).policy_object


def test_local_bounds_from_the_file(tmp_path):
    """In the file, allowed_prefixes is an array and object a boolean."""
    path = tmp_path / "rrwatch.toml"
    path.write_text('[policy]\nobject = false\nmax_zones = 3\n'
                    '[host]\nallowed_prefixes = ["10.0.0.0/8"]\n')
    config = load({"RRWATCH_CONFIG": str(path)})
    assert (config.policy_object, config.max_zones) == (False, 3)
    assert config.rr_host_prefixes == (ipaddress.ip_network("10.0.0.0/8"),)


def test_bad_local_bounds_name_their_source():
    """A fraction outside (0, 1], zones below 1, a prefix with host bits set or not a prefix,
    a boolean that is none: each is refused, naming its variable."""
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_MAX_RR_FRACTION": "0", "RRWATCH_MAX_ZONES": "0",
              "RRWATCH_RR_HOST_PREFIXES": "10.0.0.1/8", "RRWATCH_POLICY_OBJECT": "maybe"})
    assert sorted(error.value.problems) == [
        "RRWATCH_MAX_RR_FRACTION: 0 is not in (0, 1]",
        "RRWATCH_MAX_ZONES: 0 is less than 1",
        "RRWATCH_POLICY_OBJECT: 'maybe' is not a boolean",
        "RRWATCH_RR_HOST_PREFIXES: '10.0.0.1/8' is not a CIDR prefix"
        " (10.0.0.1/8 has host bits set)",
    ]
    with pytest.raises(ConfigError, match="'nowhere' is not a CIDR prefix"):
        load({"RRWATCH_RR_HOST_PREFIXES": "nowhere"})


def test_a_boolean_on_by_default_takes_a_value_as_a_flag():
    """`--policy-object false` turns the object off; `--dry-run` stays a bare switch."""
    config = cli._parser().parse_args(["run", "--policy-object", "false", "--dry-run"])
    assert (config.policy_object, config.dry_run) == ("false", True)


# -- etcd users ----------------------------------------------------------------------------------


def test_an_etcd_user_from_calicos_environment_names():
    config = load({"ETCD_USERNAME": "rrwatch", "ETCD_PASSWORD": "pw from env"})
    assert (config.etcd_auth.user, config.etcd_auth.password) == ("rrwatch", "pw from env")
    assert load({}).etcd_auth is None


def test_the_password_from_the_first_line_of_its_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("pw from file\nnot this\n")
    conf = tmp_path / "rrwatch.toml"
    conf.write_text(f'[etcd]\nusername = "rrwatch"\npassword_file = "{secret}"\n')
    config = load({}, {"config": str(conf)})
    assert (config.etcd_auth.user, config.etcd_auth.password) == ("rrwatch", "pw from file")
    assert load({"ETCD_USERNAME": "u", "RRWATCH_ETCD_PASSWORD_FILE": str(secret)}
                ).etcd_auth.password == "pw from file"


@pytest.mark.parametrize(("environ", "problem"), [
    ({"ETCD_USERNAME": "rrwatch"}, "ETCD_USERNAME rrwatch needs a password"),
    ({"ETCD_USERNAME": "rrwatch", "ETCD_PASSWORD": ""}, "needs a password"),
    ({"ETCD_PASSWORD": "hunter2"}, "a password is set (ETCD_PASSWORD or the password file) but no"
                                   " user name"),
    ({"ETCD_USERNAME": "rrwatch", "ETCD_PASSWORD": "hunter2", "RRWATCH_ETCD_PASSWORD_FILE": "F"},
     "ETCD_PASSWORD and the password file are both set"),
    ({"ETCD_USERNAME": "rrwatch", "RRWATCH_ETCD_PASSWORD_FILE": "/nonexistent/pw"},
     "/nonexistent/pw: No such file or directory"),
])
def test_an_etcd_user_needs_one_password_and_no_message_shows_it(environ, problem, tmp_path):
    environ = {k: v.replace("F", str(tmp_path / "pw")) if k.endswith("FILE") else v
               for k, v in environ.items()}
    (tmp_path / "pw").write_text("hunter2\n")
    with pytest.raises(ConfigError) as raised:
        load(environ)
    assert problem in str(raised.value) and "hunter2" not in str(raised.value)


def test_the_password_is_no_key_of_the_file(tmp_path):
    """A password in a config file is read by whoever reads the file: not an option."""
    conf = tmp_path / "rrwatch.toml"
    conf.write_text('[etcd]\nusername = "rrwatch"\npassword = "hunter2"\n')
    with pytest.raises(ConfigError) as raised:
        load({"ETCD_PASSWORD": "pw"}, {"config": str(conf)})
    assert "unknown key etcd.password" in str(raised.value)
    assert "hunter2" not in str(raised.value)
