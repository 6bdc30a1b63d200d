"""Session reports as stored: the same report is the same bytes, and a stored value is read back
exactly or refused as a bad record."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrwatch.core.calico import BadRecord
from rrwatch.core.reports import Report, Session, dumps, parse_report
from rrwatch.core.sessions import speaker_of

KEY = "/rrwatch/v1/sessions/rr-1"
AT = datetime.datetime(2026, 12, 4, 14, 24, 50, tzinfo=datetime.UTC)

sessions = st.builds(
    Session,
    state=st.sampled_from(["Established", "Active", "Connect", "Idle", "OpenSent", "down"]),
    since=st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                       max_value=datetime.datetime(2100, 1, 1),
                       timezones=st.just(datetime.UTC)).map(lambda t: t.replace(microsecond=0)),
    imported=st.integers(0, 10**6), exported=st.integers(0, 10**6),
    protocol=st.text(max_size=40), error=st.text(max_size=80))
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@given(st.booleans(), st.dictionaries(addresses, sessions, max_size=8),
       st.dictionaries(st.text(min_size=1, max_size=30), st.text(max_size=30), max_size=2))
def test_a_report_reads_back_as_written(ok, by_address, unreachable):
    report = Report(ok, by_address, unreachable)
    assert parse_report(KEY, dumps(report)) == report


def test_the_stored_form_is_compact_ordered_and_without_empty_fields():
    report = Report(True, {"10.0.0.9": Session("Active", AT, error="Socket: refused"),
                           "10.0.0.2": Session("Established", AT, 3, 4, "Node_10_0_0_2")})
    assert dumps(report) == (
        b'{"ok":true,"sessions":{"10.0.0.2":{"state":"Established","since":'
        b'"2026-12-04T14:24:50Z","imported":3,"exported":4,"protocol":"Node_10_0_0_2"},'
        b'"10.0.0.9":{"state":"Active","since":"2026-12-04T14:24:50Z","imported":0,'
        b'"exported":0,"error":"Socket: refused"}}}')


@pytest.mark.parametrize("value, why", [
    (b'{"sessions":{}}', "needs `ok`"),
    (b'{"ok":1,"sessions":{}}', "needs `ok`"),
    (b'{"ok":true,"sessions":[]}', "needs `ok`"),
    (b'{"ok":true,"sessions":{"10.0.0.01":{}}}', "canonical form"),
    (b'{"ok":true,"sessions":{"fd00:0::1":{}}}', "canonical form"),
    (b'{"ok":true,"sessions":{"10.0.0.1":{"state":"Established"}}}', "needs a state"),
    (b'{"ok":true,"sessions":{"10.0.0.1":{"state":"Up!","since":"2026-12-04T14:24:50Z"}}}',
     "needs a state"),
    (b'{"ok":true,"sessions":{"10.0.0.1":{"state":"Idle","since":"2026-12-04T14:24:50Z",'
     b'"imported":-1}}}', "needs a state"),
    (b'{"ok":true,"sessions":{"10.0.0.1":{"state":"Idle","since":"yesterday"}}}',
     "not a UTC time"),
    (b'{"ok":true,"sessions":{},"unreachable":{"/x":1}}', "unreachable"),
    (b'{"ok":true,"ok":false,"sessions":{}}', "repeats"),
])
def test_a_value_rrwatch_cannot_use_is_a_bad_record(value, why):
    with pytest.raises(BadRecord, match=why):
        parse_report(KEY, value)


@given(st.binary(max_size=200))
def test_any_bytes_are_a_report_or_a_bad_record(value):
    try:
        parse_report(KEY, value)
    except BadRecord:
        pass


@pytest.mark.parametrize("speaker", ["node-1", "n1.example.com", "host/10.0.0.100",
                                     "host/fd00::5"])
def test_a_report_names_a_node_or_an_rr_host(speaker):
    assert speaker_of("/p/sessions/" + speaker, "/p/sessions/") == speaker


@pytest.mark.parametrize("speaker", ["Node-1", "-n", "a/b", "host/", "host/10.0.0.01",
                                     "host/FD00::5", "host/node-1", "", "n" * 254])
def test_any_other_key_under_sessions_is_a_bad_record(speaker):
    with pytest.raises(BadRecord, match="not the report of a node"):
        speaker_of("/p/sessions/" + speaker, "/p/sessions/")
