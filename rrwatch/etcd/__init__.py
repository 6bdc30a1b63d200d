"""The only etcd adapter: the wire format (`wire`), errors by the gateway's codes (`errors`),
HTTP exchanges with a total deadline (`http`), the client for unary calls, pages, leases and
fail-over (`client`), the watch stream reader (`stream`), and logging in (`auth`). Its public
names are here."""

from rrwatch.etcd.client import Etcd
from rrwatch.etcd.errors import (
    CertificateRefused,
    Code,
    Compacted,
    EtcdError,
    LoginRefused,
    StreamIdle,
)
from rrwatch.etcd.stream import MAX_LINE, WatchStream
from rrwatch.etcd.wire import (
    KV,
    Compare,
    Event,
    TxnResult,
    WatchResponse,
    created_at,
    delete,
    get,
    mod_is,
    prefix_end,
    put,
)

__all__ = [
    "CertificateRefused", "Code", "Compacted", "Compare", "Etcd", "EtcdError", "Event", "KV",
    "LoginRefused", "MAX_LINE", "StreamIdle", "TxnResult", "WatchResponse", "WatchStream",
    "created_at", "delete", "get", "mod_is", "prefix_end", "put",
]
