"""Hostile configuration: at start, one line on stderr and exit 78; at a reload or a TLS
rotation, nothing changes and one line says why; no file read ever blocks or runs unbounded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
import trio

from rrwatch import tls as tls_mod
from rrwatch.config import FILE_LIMIT, OPTIONS, load
from rrwatch.errors import ConfigError, ExitStatus
from rrwatch.tls import TlsFiles
from tests.support import need_bird

DEEP = 10_000
NESTED_TABLES = "[" + ".".join(["a"] * DEEP) + "]\nx = 1\n"
NESTED_INLINE = "a = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n"
# One rrwatch run in a child: its address space is capped, so that a read without end fails
# there (as a MemoryError) rather than taking the test machine's memory with it.
_CAPPED = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30));"
           " from rrwatch.cli.main import main; sys.exit(main(sys.argv[1:]))")


def rrwatch_run(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`rrwatch run` with only `env` for rrwatch's settings; killed after 60 s."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ETCD_", "ROUTE_REFLECTOR_", "RRWATCH_"))}
    return subprocess.run([sys.executable, "-c", _CAPPED, "run"], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)


def copy_tls(directory, tls: TlsFiles) -> TlsFiles:
    """Copies of the test PKI's client files, free to be replaced by a test."""
    copies = TlsFiles(*(str(directory / name) for name in ("ca.pem", "cert.pem", "key.pem")))
    for source, target in zip(tls.paths, copies.paths, strict=True):
        shutil.copy(source, target)
    os.chmod(copies.key, 0o600)
    return copies


def tls_env(files: TlsFiles) -> dict[str, str]:
    return {"ETCD_CA_CERT_FILE": files.ca, "ETCD_CERT_FILE": files.cert,
            "ETCD_KEY_FILE": files.key}


def replace_with(path: str, kind: str) -> None:
    """Put a FIFO, or a link to /dev/zero, where `path` was, as a rotation tool would: a rename."""
    temp = path + ".new"
    if kind == "fifo":
        os.mkfifo(temp)
    else:
        os.symlink("/dev/zero", temp)
    os.replace(temp, path)


# -- at start: exit 78 and one line -----------------------------------------------------------

def _file(tmp_path, text: str | bytes) -> dict[str, str]:
    path = tmp_path / "rrwatch.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return {"RRWATCH_CONFIG": str(path)}


def _special(tmp_path, kind: str) -> str:
    if kind == "fifo":
        os.mkfifo(tmp_path / "special")
        return str(tmp_path / "special")
    return "/dev/zero" if kind == "zero" else str(tmp_path)


BIRD = {"RRWATCH_REGISTER_IP": "10.0.0.5"}
START_CASES: dict[str, tuple[Callable[..., dict[str, str]], str]] = {
    "nested-tables": (lambda tmp, pki: _file(tmp, NESTED_TABLES),
                      "unknown key a.a.a."),
    "nested-inline-tables": (lambda tmp, pki: _file(tmp, NESTED_INLINE),
                             "not valid TOML (nested too deeply)"),
    "integer-of-5000-digits": (lambda tmp, pki: _file(tmp, "[policy]\nmin = " + "9" * 5000),
                               "not valid TOML (Exceeds the limit"),
    "config-fifo": (lambda tmp, pki: {"RRWATCH_CONFIG": _special(tmp, "fifo")},
                    "not a regular file but a FIFO"),
    "config-dev-zero": (lambda tmp, pki: {"RRWATCH_CONFIG": _special(tmp, "zero")},
                        "/dev/zero: not a regular file but a character device"),
    "config-directory": (lambda tmp, pki: {"RRWATCH_CONFIG": _special(tmp, "dir")},
                         "Is a directory"),
    "config-too-large": (lambda tmp, pki: _file(tmp, b"#" * (FILE_LIMIT + 1)),
                         f"larger than {FILE_LIMIT} bytes"),
    "ca-fifo": (lambda tmp, pki: {**tls_env(pki.client),
                                  "ETCD_CA_CERT_FILE": _special(tmp, "fifo")},
                "cannot read: not a regular file but a FIFO"),
    "cert-dev-zero": (lambda tmp, pki: {**tls_env(pki.client), "ETCD_CERT_FILE": "/dev/zero"},
                      "/dev/zero: cannot read: not a regular file but a character device"),
    "key-fifo": (lambda tmp, pki: {**tls_env(pki.client), "ETCD_KEY_FILE": _special(tmp, "fifo")},
                 "cannot read: not a regular file but a FIFO"),
    "nan-timeout": (lambda tmp, pki: {"RRWATCH_WATCH_TIMEOUT": "nan"},
                    "RRWATCH_WATCH_TIMEOUT: 'nan' is not a finite number"),
    "inf-in-file": (lambda tmp, pki: _file(tmp, "[etcd]\nprobe_interval = inf\n"),
                    "etcd.probe_interval: 'inf' is not a finite number"),
    "newline-in-tls-path": (lambda tmp, pki: {**tls_env(pki.client),
                                              "ETCD_KEY_FILE": "/x\nrrwatch: forged"},
                            "'/x\\nrrwatch: forged': cannot read"),
    "newline-in-config-path": (lambda tmp, pki: {"RRWATCH_CONFIG": "/x\nrrwatch: forged"},
                               "'/x\\nrrwatch: forged': No such file"),
    "bird-config-directory": (lambda tmp, pki: {**BIRD, "RRWATCH_BIRD_CONFIG": str(tmp)},
                              "is a directory, not a file"),
    "bird-include-quote": (lambda tmp, pki: {"RRWATCH_BIRD_INCLUDE": '/etc/bird/x"; y "'},
                           "RRWATCH_BIRD_INCLUDE: '/etc/bird/x\"; y \"' holds a quote"),
    "bird-include-newline": (lambda tmp, pki: {"RRWATCH_BIRD_INCLUDE": "/etc/x\nprotocol"},
                             "RRWATCH_BIRD_INCLUDE: '/etc/x\\nprotocol' holds"),
    "bird-include-escape": (lambda tmp, pki: {"RRWATCH_BIRD_INCLUDE": "/etc/\x1b[2Jx"},
                            "RRWATCH_BIRD_INCLUDE: '/etc/\\x1b[2Jx' holds"),
    "selector-nested-deeply": (lambda tmp, pki: {"RRWATCH_EXCLUDE": "(" * DEEP},
                               "RRWATCH_EXCLUDE: longer than 1024 characters"),
    "selector-nested-in-1024": (lambda tmp, pki: {"RRWATCH_EXCLUDE": "!" * 1000 + "all()"},
                                "RRWATCH_EXCLUDE: nested more than 64 deep"),
}


@pytest.mark.parametrize("case", START_CASES)
def test_hostile_config_is_one_line_and_exit_78(tmp_path, pki, case):
    """Each hostile setting ends `rrwatch run` at once with status 78 and one line on stderr
    that says why; no traceback, no hang, no unbounded read."""
    if case == "bird-config-directory":
        need_bird()  # `rrwatch run` looks for `bird` on PATH, or names its absence as well
    make_env, reason = START_CASES[case]
    result = rrwatch_run(make_env(tmp_path, pki))
    assert result.returncode == ExitStatus.CONFIG, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert result.stderr.startswith("rrwatch: configuration: ")
    assert reason in result.stderr


def test_every_float_option_is_finite_only():
    """nan, inf and -inf are refused for every option that takes a float, from the environment
    and from the file, each naming its source."""
    floats = []
    for option in OPTIONS:
        try:
            if type(option.parse("1")) is float:
                floats.append(option)
        except ValueError:  # an option that "1" is no value of, such as an address
            continue
    assert {o.name for o in floats} >= {"debounce", "settle", "etcd_timeout", "watch_timeout",
                                        "probe_interval", "check_interval", "ratio"}
    for option in floats:
        for text in ("nan", "inf", "-inf", " NaN ", "1e400"):
            with pytest.raises(ConfigError) as error:
                load({option.env[0]: text})
            [problem] = error.value.problems
            assert problem.startswith(f"{option.env[0]}: "), problem


def test_non_finite_toml_floats_are_refused(tmp_path):
    """TOML's own nan and inf, and a float too large for a double, are refused in the file."""
    path = tmp_path / "rrwatch.toml"
    path.write_text("[reconcile]\nsettle = nan\ndebounce = 1e400\n[etcd]\ntimeout = -inf\n")
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_CONFIG": str(path)})
    assert sorted(error.value.problems) == sorted(
        f"{path}: {key}: {text!r} is not a finite number"
        for key, text in (("reconcile.settle", "nan"), ("reconcile.debounce", "inf"),
                          ("etcd.timeout", "-inf")))


def test_problems_never_span_lines(tmp_path):
    """Keys and variable names with newlines or escapes are shown escaped: one line each."""
    path = tmp_path / "rrwatch.toml"
    path.write_text('"a\\nb" = 1\n"\\u001b[2J" = 2\n')
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_CONFIG": str(path), "RRWATCH_X\nrrwatch: forged": "1"})
    assert sorted(error.value.problems) == sorted([
        f"{path}: unknown key 'a\\nb'",
        f"{path}: unknown key '\\x1b[2J'",
        "environment: unknown variable 'RRWATCH_X\\nrrwatch: forged'",
    ])
    assert all(p.isprintable() for p in ConfigError(["a\nb", "\x1b[2J", "\u2028"]).problems)


def test_a_long_unknown_key_is_cut_short(tmp_path):
    """A key 20,000 characters long is named by its start and its length."""
    path = tmp_path / "rrwatch.toml"
    path.write_text(NESTED_TABLES)
    with pytest.raises(ConfigError) as error:
        load({"RRWATCH_CONFIG": str(path)})
    [problem] = error.value.problems
    assert problem.endswith(f"... ({2 * DEEP + 1} characters)") and len(problem) < 300


def _bird(name: str) -> str | None:
    return "/usr/sbin/bird"


@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling link"])
def test_bird_config_must_be_a_regular_file(tmp_path, kind):
    """`bird.config` may not exist yet, but may not be a directory or a special file."""
    path = tmp_path / "bird.conf"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="RRWATCH_BIRD_CONFIG: '.*' is "):
        load({**BIRD, "RRWATCH_BIRD_CONFIG": str(path)}, which=_bird)
    ok = load({**BIRD, "RRWATCH_BIRD_CONFIG": str(tmp_path / "other.conf")}, which=_bird)
    assert ok.bird_config == str(tmp_path / "other.conf")


@pytest.mark.parametrize("include", ['/etc/bird/a"b.conf', "/etc/bird/a\\b.conf",
                                     "/etc/bird/a\nb.conf", "/etc/bird/a\tb.conf",
                                     "/etc/bird/\x00.conf", "/etc/bird/\u2028.conf"])
def test_bird_include_without_quotes_or_control_characters(include):
    """A quote, a backslash or a control character in `bird.include` is refused: BIRD's
    strings have no escapes, so each would end the include early or add a line."""
    with pytest.raises(ConfigError, match="holds a quote, a backslash or a control character"):
        load({"RRWATCH_BIRD_INCLUDE": include})
    assert load({"RRWATCH_BIRD_INCLUDE": " /etc/bird/local peers.conf "}).bird_include == (
        "/etc/bird/local peers.conf")


@pytest.mark.parametrize(("mode", "warned"), [(0o755, None), (0o775, "group"),
                                              (0o757, "others"), (0o1777, "group")])
def test_writable_bird_directory_is_a_warning(tmp_path, mode, warned):
    """A BIRD configuration directory that its group or others may write gives one warning
    line naming the directory, who may write and the mode; the config still loads."""
    directory = tmp_path / "bird"
    directory.mkdir()
    directory.chmod(mode)
    config = load({**BIRD, "RRWATCH_BIRD_CONFIG": str(directory / "bird.conf")}, which=_bird)
    if warned is None:
        assert config.warnings == ()
    else:
        [warning] = config.warnings
        assert warning.startswith(f"{directory}: the BIRD configuration's directory is writable")
        assert warned in warning and f"(mode {mode:04o})" in warning and "\n" not in warning


async def test_read_regular_never_blocks_nor_reads_without_end(tmp_path):
    """tls.read_regular refuses a FIFO (with no writer), /dev/zero, a directory and a file over
    its limit at once, each with a short reason; a regular file comes back whole."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "ok").write_bytes(b"x" * 100)
    cases = {str(tmp_path / "fifo"): "not a regular file but a FIFO",
             "/dev/zero": "not a regular file but a character device",
             str(tmp_path): "Is a directory",
             str(tmp_path / "big"): "larger than 100 bytes"}
    with trio.fail_after(10):
        for path, reason in cases.items():
            with pytest.raises(OSError) as error:
                await trio.to_thread.run_sync(tls_mod.read_regular, path, 100,
                                              abandon_on_cancel=True)
            assert error.value.strerror == reason
        assert await trio.to_thread.run_sync(
            tls_mod.read_regular, str(tmp_path / "ok"), 100) == b"x" * 100


async def test_tls_context_never_reads_a_fifo(tmp_path, pki):
    """tls.context with a FIFO for any of the three files raises OSError at once; with good
    files it makes a context from what it read."""
    files = copy_tls(tmp_path, pki.client)
    with trio.fail_after(10):
        assert await trio.to_thread.run_sync(tls_mod.context, files) is not None
        for field in ("ca", "cert", "key"):
            fifo = str(tmp_path / f"{field}.fifo")
            os.mkfifo(fifo)
            bad = TlsFiles(**{**{f: getattr(files, f) for f in ("ca", "cert", "key")},
                              field: fifo})
            with pytest.raises(OSError, match="not a regular file but a FIFO"):
                await trio.to_thread.run_sync(tls_mod.context, bad, abandon_on_cancel=True)


# -- the running daemon: a bad reload or rotation changes nothing, in one line -----------------

RELOAD_REFUSED = "keeping the running configuration"


def reload_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "reload: " in line]


async def test_sighup_with_deeply_nested_config_changes_nothing(tmp_path, start_daemon):
    """SIGHUP with a config nested 10,000 deep: one line says why and the daemon runs on with
    its policy; a good file afterwards is taken up."""
    path = tmp_path / "rrwatch.toml"
    path.write_text("[policy]\nmin = 2\n")
    daemon = start_daemon({"RRWATCH_CONFIG": str(path)})
    with trio.fail_after(60):
        await daemon.wait_for_log("in sync with")
        path.write_text(NESTED_INLINE)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log(RELOAD_REFUSED)
        [line] = reload_lines(daemon.log())
        assert f"{path}: not valid TOML (nested too deeply)" in line
        path.write_text("[policy]\nmin = 4\n")
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log("reloaded the configuration")
    assert "policy from the reloaded config: topology simple, 4-25 RRs" in daemon.log()
    assert "4-25 RRs" not in daemon.log().split(RELOAD_REFUSED)[0]
    assert daemon.stop() == 0


@pytest.mark.parametrize("which", ["config", "ca"])
async def test_sighup_with_a_fifo_keeps_the_event_loop_running(tmp_path, start_daemon, pki,
                                                               which):
    """SIGHUP with the config file or the CA file replaced by a FIFO: one line says why, and the
    event loop runs on: metrics answer, a later SIGHUP is handled, SIGTERM stops it."""
    path = tmp_path / "rrwatch.toml"
    path.write_text("[policy]\nmin = 2\n")
    files = copy_tls(tmp_path, pki.client)
    daemon = start_daemon({"RRWATCH_CONFIG": str(path), **tls_env(files)})
    with trio.fail_after(60):
        await daemon.wait_for_log("in sync with")
        replace_with(str(path) if which == "config" else files.ca, "fifo")
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log(RELOAD_REFUSED)
        [line] = reload_lines(daemon.log())
        assert "not a regular file but a FIFO" in line
        assert await trio.to_thread.run_sync(daemon.metrics)
        os.unlink(str(path) if which == "config" else files.ca)
        if which == "config":
            path.write_text("[policy]\nmin = 2\n")
        else:
            shutil.copy(pki.client.ca, files.ca)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_for_log("reloaded the configuration")
        assert await trio.to_thread.run_sync(daemon.stop) == 0


@pytest.mark.parametrize(("field", "kind", "reason"), [
    ("key", "zero", "not a regular file but a character device"),
    ("ca", "fifo", "not a regular file but a FIFO"),
])
async def test_tls_file_rotated_to_a_special_file_is_refused(tmp_path, start_daemon, pki,
                                                             field, kind, reason):
    """A TLS file rotated to /dev/zero or a FIFO under a running daemon is refused in one line
    and counted; the certificate in use stays and the daemon stops cleanly."""
    files = copy_tls(tmp_path, pki.client)
    daemon = start_daemon(tls_env(files))
    with trio.fail_after(60):
        await daemon.wait_for_log("in sync with")
        replace_with(getattr(files, field), kind)
        while daemon.metrics().get("rrwatch_tls_rejected_total") != 1:
            assert daemon.proc.poll() is None, daemon.log()
            await trio.sleep(0.1)
        [line] = [line for line in daemon.log().splitlines() if "TLS (the files changed)" in line]
        assert line.endswith(f"{getattr(files, field)}: cannot read: {reason};"
                             " keeping the certificate in use")
        assert daemon.metrics().get("rrwatch_tls_reloads_total") == 0
        assert await trio.to_thread.run_sync(daemon.stop) == 0


async def test_writable_bird_directory_is_logged_at_start(bird, tmp_path, start_daemon):
    """An RR host whose BIRD directory others may write logs one warning line at start (RR host
    mode needs `bird` on PATH to start)."""
    directory = tmp_path / "bird"
    directory.mkdir()
    directory.chmod(0o777)
    daemon = start_daemon({**BIRD, "RRWATCH_BIRD_CONFIG": str(directory / "bird.conf"),
                           "RRWATCH_BIRD_SOCKET": str(tmp_path / "bird.ctl")})
    with trio.fail_after(60):
        await daemon.wait_for_log("writable by")
    [line] = [line for line in daemon.log().splitlines() if "writable by" in line]
    assert "WARNING" in line and "group" in line and "others" in line and "(mode 0777)" in line
