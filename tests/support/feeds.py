"""Publisher feeds with keys generated in the test, the operations they
publish, and mirrors following them.

Two conventions, kept as their tests use them: feed ``NAME`` / ``ORIGIN``
(``PubFeed``, the publishers of the ``publisher`` and ``make_publisher``
fixtures) and feed ``tid`` of ``make_feed`` (the distribution tests', with
its access level). ``snapshot`` here is a mirror's head and active set;
``mirror_state.snapshot`` is everything a mirror stores.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from federation.core import entries as E
from federation.core.entries import Add, Withdraw
from federation.core.note import Signer
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher, PublishResult

NAME = "t"
ORIGIN = "example.org/feeds/t"


def feed_url(base: str, name: str = NAME) -> str:
    return f"{base}/feeds/{name}/"


def adds(n: int, case: str = "case1", labels: tuple[str, ...] = ("csam",), hash_type: str = "md5") -> list[E.Add]:
    size = E.HASH_LENGTHS[hash_type]
    return [E.Add(hash_type, os.urandom(size), case, labels, 0) for _ in range(n)]


# ---- a publisher DB with feed NAME (the ``publisher`` fixtures) ----------------------

@dataclass
class PubFeed:
    """A publisher DB with one feed and the key that signs it."""

    pub: Publisher
    signer: Signer
    name: str
    origin: str
    path: Path

    @property
    def vkey(self) -> str:
        return self.signer.vkey

    def publish(self, ops: list[Add | Withdraw], **kw) -> PublishResult:
        return self.pub.publish(self.name, ops, self.signer, **kw)

    def publish_adds(self, n: int, case: str = "case1", labels: tuple[str, ...] = ("csam",),
                     hash_type: str = "md5") -> tuple[PublishResult, list[Add]]:
        ops = adds(n, case, labels, hash_type)
        return self.publish(ops), ops

    def head(self):
        return self.pub.feed(self.name)


# ---- feed ``tid`` with an access level (the distribution tests) --------------------

def ops_for(version: int, n: int = 5, case: str | None = None) -> list[Add]:
    case = case or f"case-{version}"
    return [Add("md5", hashlib.md5(f"{version}/{i}".encode()).digest(), case, ("csam",), 0) for i in range(n)]


@dataclass
class Feed:
    pub: Publisher
    signer: Signer
    name: str
    origin: str
    path: Path

    def publish(self, ops) -> PublishResult:
        return self.pub.publish(self.name, ops, self.signer)

    def publish_version(self, n: int = 5) -> PublishResult:
        head = self.pub.feed(self.name)
        return self.publish(ops_for(head.version + 1, n))

    def withdraw_case(self, case: str) -> PublishResult:
        return self.publish([Withdraw("submitter_request", 0, case=case)])

    def checkpoint(self) -> bytes:
        return self.pub.feed(self.name).checkpoint


def make_feed(path: Path, name: str = "tid", origin: str | None = None, signer: Signer | None = None,
              access: str = "members") -> Feed:
    origin = origin or f"clearinghouse.example/feeds/{name}"
    signer = signer or Signer.generate(origin)
    pub = Publisher(path)
    pub.create_feed(name, origin, signer, access)
    return Feed(pub, signer, name, origin, path)


def follow(path: Path, feed: Feed, urls: list[str], name: str | None = None) -> Mirror:
    m = Mirror(path)
    m.follow(name or feed.name, feed.origin, [feed.signer.vkey], urls)
    return m


def snapshot(m: Mirror, name: str) -> tuple:
    f = m.get(name)
    fid = f.id
    rows = m.conn.execute("SELECT hash_type, value, case_id, labels FROM hashes WHERE feed=? ORDER BY 1,2,3",
                          (fid,)).fetchall()
    return (f.applied_size, f.version, f.digest, f.checkpoint, tuple(rows))
