"""Requests that etcd's auth denies rrwatch's user: one log line per kind, not one per retry.

A missing grant does not cure itself by retrying, and the daemon retries every few seconds for
ever; so the first denial of each kind of request is an error naming what to grant, and the
rest are debug lines. The daemon keeps running meanwhile: it reads what it may, and a grant
added later is used at the next retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rrwatch.etcd.errors import EtcdError

log = logging.getLogger("rrwatch.etcd")

_told: set[str] = set()  # the kinds already logged; one daemon per process


def explained(kind: str, error: BaseException) -> bool:
    """If `error` is etcd denying a permission, log it (once per `kind`) and say True."""
    if not (isinstance(error, EtcdError) and error.denied):
        return False
    if kind in _told:
        log.debug("etcd still denies %s: %s", kind, error)
    else:
        _told.add(kind)
        log.error("etcd denies rrwatch's user %s (%s): the role in docs/reference.md grants"
                  " it; retrying meanwhile", kind, error)
    return True


def failed(kind: str, otherwise: Callable[[Exception], None]) -> Callable[[Exception], None]:
    """A retry loop's `failed` callback: a denial is `explained`, any other error `otherwise`."""

    def told(error: Exception) -> None:
        if not explained(kind, error):
            otherwise(error)

    return told
