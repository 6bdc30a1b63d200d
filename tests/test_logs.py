"""Root logging setup: text, journald priority prefixes, JSON lines."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from typing import TextIO

import pytest

from rrwatch import logs
from rrwatch.core.text import printable

log = logging.getLogger("rrwatch.t")


@pytest.fixture(autouse=True)
def root() -> Iterator[logging.Logger]:
    """Put the root logger and urllib3's level back as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    urllib3_level = logging.getLogger("urllib3").level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(urllib3_level)


@pytest.fixture
def stream(tmp_path) -> Iterator[TextIO]:
    """A real file, so that fstat can compare it with JOURNAL_STREAM."""
    with open(tmp_path / "log", "w+") as f:
        yield f


def written(stream: TextIO) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def journal_stream(f: TextIO) -> str:
    stat = os.fstat(f.fileno())
    return f"{stat.st_dev}:{stat.st_ino}"


def test_text_format(stream):
    """In the foreground: local time with ms, the padded level, the logger and the message."""
    logs.setup(verbose=False, environ={}, stream=stream)
    log.info("hello %s", "world")
    log.debug("not shown without verbose")
    [line] = written(stream)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    rrwatch\.t: hello world",
                        line)


def test_verbose_shows_debug(stream):
    """verbose=True lowers the root level to DEBUG."""
    logs.setup(verbose=True, environ={}, stream=stream)
    log.debug("detail")
    [line] = written(stream)
    assert line.endswith("DEBUG   rrwatch.t: detail")


def test_journald_prefixes_when_journal_stream_matches(stream):
    """JOURNAL_STREAM naming the stream's dev:inode gives <N> prefixes and no timestamp."""
    logs.setup(verbose=True, environ={"JOURNAL_STREAM": journal_stream(stream)}, stream=stream)
    log.critical("c")
    log.error("e")
    log.warning("w")
    log.info("i")
    log.debug("d")
    assert written(stream) == ["<3>rrwatch.t: c", "<3>rrwatch.t: e", "<4>rrwatch.t: w",
                               "<6>rrwatch.t: i", "<7>rrwatch.t: d"]


def test_no_journald_prefixes_when_journal_stream_names_another_file(stream, tmp_path):
    """An inherited JOURNAL_STREAM that is not this stream leaves the text format."""
    with open(tmp_path / "other", "w") as other:
        environ = {"JOURNAL_STREAM": journal_stream(other)}
    logs.setup(verbose=False, environ=environ, stream=stream)
    log.warning("w")
    [line] = written(stream)
    assert not line.startswith("<")
    assert line.endswith("WARNING rrwatch.t: w")


def test_journal_traceback_is_one_entry(stream):
    """journald makes each line an entry: a traceback is escaped into its record's one line."""
    logs.setup(verbose=False, environ={"JOURNAL_STREAM": journal_stream(stream)}, stream=stream)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed")
    [line] = written(stream)
    assert line.startswith("<3>rrwatch.t: failed\\nTraceback (most recent call last):\\n")
    assert line.endswith("\\nValueError: boom\\nsecond line")


def test_json_lines(stream):
    """One object per line with time (UTC, ms), level, logger, message and exception."""
    logs.setup(verbose=False, fmt="json", environ={}, stream=stream)
    log.info("multi\nline")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed %d", 2)
    first, second = (json.loads(line) for line in written(stream))
    assert set(first) == {"time", "level", "logger", "message"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["level"] == "INFO" and first["logger"] == "rrwatch.t"
    assert first["message"] == "multi\nline"
    assert second["level"] == "ERROR" and second["message"] == "failed 2"
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert second["exception"].endswith("ValueError: boom")


def test_json_ignores_journal_stream(stream):
    """json is asked for explicitly, so it wins over journald prefixes."""
    logs.setup(verbose=False, fmt="json", environ={"JOURNAL_STREAM": journal_stream(stream)},
               stream=stream)
    log.warning("w")
    [line] = written(stream)
    assert json.loads(line)["message"] == "w"


def test_setup_twice_replaces_its_own_handler(stream, tmp_path, root, caplog):
    """A second call leaves one handler of ours, and others' (pytest's capture) in place."""
    with open(tmp_path / "first", "w+") as first:
        logs.setup(verbose=False, environ={}, stream=first)
        logs.setup(verbose=False, environ={}, stream=stream)
        log.info("once")
        assert written(first) == []
    assert len(written(stream)) == 1
    assert [h for h in root.handlers if isinstance(h, logs._Handler)] == [root.handlers[-1]]
    assert [r.getMessage() for r in caplog.records] == ["once"]


def test_urllib3_is_quieted(stream):
    """urllib3's per-connection DEBUG lines stay hidden even when verbose."""
    logs.setup(verbose=True, environ={}, stream=stream)
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
    assert logging.getLogger("urllib3").level == logging.WARNING
    assert written(stream) == []


def test_unknown_format_is_refused(stream):
    """A format not in FORMATS is a ValueError, not a silent fallback."""
    with pytest.raises(ValueError, match="xml"):
        logs.setup(verbose=False, fmt="xml", environ={}, stream=stream)


# -- hostile text: one record is one line, and nothing reaches the terminal raw ------------------

# A node key as an attacker writes it: a forged second record, then "clear the screen".
FORGED = ("/calico/resources/v3/projectcalico.org/nodes/evil\n"
          "2024-01-01 00:00:00,000 INFO    rrwatch.daemon: leading as me\x1b[2J\x1b[H")
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


@pytest.mark.parametrize("journal", [False, True])
def test_hostile_message_and_traceback_stay_one_line(stream, journal):
    """A key with a newline and ESC, in the message and in the exception, gives one line with
    both escaped: no forged record, no terminal control."""
    environ = {"JOURNAL_STREAM": journal_stream(stream)} if journal else {}
    logs.setup(verbose=False, environ=environ, stream=stream)
    log.warning("skipping %s: bad", FORGED)
    try:
        raise ValueError(f"{FORGED}\u2028\x85")
    except ValueError:
        log.exception("reading %s", FORGED)
    first, second = written(stream)
    escaped = printable(FORGED)
    assert "\\n2024-01-01 00:00:00,000 INFO" in escaped and "\\x1b[2J" in escaped
    assert first.endswith(f"rrwatch.t: skipping {escaped}: bad")
    assert first.startswith("<4>") == journal
    assert second.endswith(f"ValueError: {escaped}\\u2028\\x85")
    assert f"rrwatch.t: reading {escaped}\\nTraceback (most recent call last):\\n" in second
    assert not any(UNSAFE.search(line) for line in (first, second))


def test_json_keeps_a_hostile_message_exact(stream):
    """JSON lines need no escaping of ours: each record is one valid object, the text exact."""
    logs.setup(verbose=False, fmt="json", environ={}, stream=stream)
    try:
        raise ValueError(FORGED + "\u2028")
    except ValueError:
        log.exception("skipping %s", FORGED)
    [line] = written(stream)
    entry = json.loads(line)
    assert entry["message"] == f"skipping {FORGED}"
    assert entry["exception"].endswith(f"ValueError: {FORGED}\u2028")
    assert UNSAFE.search(line) is None
