"""Config: the seeds' environment names, flags over environment, every problem at once."""

from __future__ import annotations

import pytest

from rrwatch import cli
from rrwatch.config import EX_CONFIG, OPTIONS, ConfigError, load
from rrwatch.model import RRLabel
from rrwatch.pki import issue, make_ca, write_pem
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
    assert any(p.startswith("ETCD_CERT_FILE:") for p in problems)
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


def test_every_option_has_a_flag(capsys):
    """`rrwatch run --help` lists a flag for every option."""
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    assert "224.0.0.%d" in text
    for option in OPTIONS:
        assert "--" + option.name.replace("_", "-") in text


def test_cli_config_error_is_one_line_and_exit_78(monkeypatch, capsys):
    """A config problem ends `rrwatch run` with one line on stderr and status 78."""
    monkeypatch.setenv("ROUTE_REFLECTOR_RATIO", "lots")
    assert cli.main(["run"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ROUTE_REFLECTOR_RATIO" in err and "Traceback" not in err


def tls_env(ca: str, cert: str, key: str) -> dict[str, str]:
    return {"ETCD_CA_CERT_FILE": ca, "ETCD_CERT_FILE": cert, "ETCD_KEY_FILE": key}


def test_good_tls_files_load(pki):
    """The test PKI's client files pass the TLS check."""
    assert load(tls_env(pki.client.ca, pki.client.cert, pki.client.key)).tls.cert == pki.client.cert


def test_mismatched_key_is_a_config_error(pki, tmp_path):
    """A client key that does not belong to the certificate is refused, naming both files."""
    _, other_key = issue(*make_ca("other"), "rrwatch")
    key = str(tmp_path / "other-key.pem")
    write_pem(key, other_key)
    with pytest.raises(ConfigError, match="not a usable certificate and key") as error:
        load(tls_env(pki.client.ca, pki.client.cert, key))
    assert key in str(error.value) and pki.client.cert in str(error.value)


def test_ca_file_that_is_not_pem_is_a_config_error(pki, tmp_path):
    """A CA file that holds no certificate is refused, naming the file."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="not a usable CA certificate"):
        load(tls_env(str(ca), pki.client.cert, pki.client.key))


def test_cli_tls_error_is_one_line_and_exit_78(pki, tmp_path, monkeypatch, capsys):
    """`rrwatch run` with a key that does not match its certificate exits 78 with one line."""
    _, other_key = issue(*make_ca("other"), "rrwatch")
    key = str(tmp_path / "other-key.pem")
    write_pem(key, other_key)
    for name, value in tls_env(pki.client.ca, pki.client.cert, key).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err


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


def test_rr_host_options(tmp_path):
    path = str(tmp_path / "bird.conf")
    config = load({"RRWATCH_REGISTER_IP": "10.0.0.5, fd00::5", "RRWATCH_BIRD_CONFIG": path,
                   "RRWATCH_BIRD_SOCKET": "/sockets/bird.ctl"})
    assert config.register_ip == ("10.0.0.5", "fd00::5")
    assert (config.bird_config, config.bird_socket) == (path, "/sockets/bird.ctl")
    assert load({}).bird_socket == "/run/bird/bird.ctl"  # Debian's bird2


@pytest.mark.parametrize(("environ", "problem"), [
    ({"RRWATCH_REGISTER_IP": "10.0.0.5,10.0.0.6"}, "more than one address of a family"),
    ({"RRWATCH_BIRD_CONFIG": "/etc/bird/bird.conf"}, "needs RRWATCH_REGISTER_IP"),
    ({"RRWATCH_REGISTER_IP": "10.0.0.5", "RRWATCH_BIRD_CONFIG": "/no/such/dir/bird.conf"},
     "the directory of /no/such/dir/bird.conf does not exist"),
])
def test_rr_host_option_problems(environ, problem):
    with pytest.raises(ConfigError, match=problem):
        load(environ)


def test_bad_fault_and_leadership_options_name_their_source():
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_LEASE_TTL": "1", "RRWATCH_PREFIX": "/calico/rr/",
              "RRWATCH_REGISTER_IP": "10.0.0.300", "RRWATCH_METRICS_ADDRESS": "localhost"})
    problems = error.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "RRWATCH_LEASE_TTL", "RRWATCH_PREFIX", "RRWATCH_REGISTER_IP", "RRWATCH_METRICS_ADDRESS"]
    with pytest.raises(ConfigError, match="RRWATCH_REGISTER_CLUSTER_ID needs"):
        load({"RRWATCH_REGISTER_CLUSTER_ID": "224.0.0.9"})
