"""Real etcd processes from rrwatch.local_etcd: start, mTLS, crash, freeze, compaction, quorum."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import etcd3gw
import pytest
import requests

from rrwatch.testing.local_etcd import LocalEtcd, start_cluster
from rrwatch.tls import session as tls_session


@pytest.fixture
def session(pki) -> Iterator[requests.Session]:
    with tls_session(pki.client) as s:
        yield s


def client_for(member: LocalEtcd, session: requests.Session) -> etcd3gw.Etcd3Client:
    return etcd3gw.Etcd3Client(
        host="127.0.0.1", port=member.client_port, protocol="https",
        session=session, api_path="/v3/", timeout=5,
    )


def test_single_member_serves_put_and_get(etcd_server, session):
    """A single member starts and serves a put and a get over mutual TLS."""
    client = client_for(etcd_server, session)
    assert client.put(b"/k", b"v")
    assert client.get(b"/k") == [b"v"]
    assert etcd_server.revision() == 2


def test_client_without_certificate_is_refused(etcd_server, pki):
    """A client that trusts the CA but presents no certificate fails with an SSL error."""
    with requests.Session() as bare:
        bare.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            bare.get(etcd_server.endpoint + "/health", verify=pki.ca, timeout=5)


def test_kill_and_restart_keeps_data(etcd_server, session):
    """After SIGKILL and a restart on the same data dir, acknowledged writes are still there."""
    client_for(etcd_server, session).put(b"/durable", b"yes")
    etcd_server.kill()
    assert not etcd_server.running
    etcd_server.restart()
    assert client_for(etcd_server, session).get(b"/durable") == [b"yes"]


def test_pause_blocks_and_resume_recovers(etcd_server, pki):
    """A paused member answers nothing until resumed, then serves again."""
    etcd_server.pause()
    try:
        with tls_session(pki.client) as s, pytest.raises(requests.exceptions.Timeout):
            s.get(etcd_server.endpoint + "/health", timeout=0.5)
    finally:
        etcd_server.resume()
    assert etcd_server.revision() == 1


def test_compact_makes_old_revision_unreadable(etcd_server, session):
    """After compact(N), a read at a revision below N is refused as compacted."""
    client = client_for(etcd_server, session)
    client.put(b"/c", b"1")
    old = etcd_server.revision()
    client.put(b"/c", b"2")
    etcd_server.compact(etcd_server.revision())
    key = base64.b64encode(b"/c").decode()
    body = {"key": key, "revision": old}
    resp = session.post(etcd_server.endpoint + "/v3/kv/range", json=body, timeout=5)
    assert resp.status_code == 400
    assert "required revision has been compacted" in resp.json()["message"]
    assert client.get(b"/c") == [b"2"]


def test_three_members_survive_losing_one(tmp_path, pki, session, etcd_binary):
    """A 3-member cluster starts and keeps serving writes after one member is stopped."""
    members = start_cluster(str(tmp_path / "cluster"), pki, size=3, binary=etcd_binary)
    try:
        client_for(members[0], session).put(b"/q", b"before")
        members[0].stop()
        client = client_for(members[1], session)
        # If the stopped member led, the others need an election (~100 ms here) first.
        deadline = time.monotonic() + 5
        while True:
            try:
                client.put(b"/q", b"after")
                break
            except etcd3gw.exceptions.Etcd3Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert client_for(members[2], session).get(b"/q") == [b"after"]
    finally:
        # kill, not stop: a SIGTERMed member waits ~1 s for its peers' connections to drain.
        for member in members:
            member.kill()
