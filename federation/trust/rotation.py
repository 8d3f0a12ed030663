"""Trust rotation, TUF-style, and the acceptance policy a mirror syncs under.

Rule (python-tuf's root rotation): trust version N+1 is accepted only if it
is signed by ``threshold`` of version N's trust keys *and* by its own
``threshold`` of its own trust keys, and its version is exactly N+1. So a
single stolen trust key cannot rotate, a skipped version cannot slip past
the keys in between, and an old file replayed later is a rollback.

Storage (``store.trust_chain``). Each accepted version is a row of
``trust_chain`` in the same SQLite file as the feed (mirror.db for followed
feeds, publisher.db for published ones, so a publisher and relays can serve
the chain). One step = one transaction that inserts version N+1 only while N
is the newest, and, on a mirror, replaces the feed's trusted log keys
through the mirror store (``mirror.set_trusted_keys``) in that same
transaction. A crash leaves either version N with N's keys or N+1 with
N+1's keys.

Served at ``<tlog-tiles prefix>trust/latest`` and ``trust/<N>`` (see
``install_trust_routes``).
"""
from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from federation.core.checkpoint import SignedCheckpoint
from federation.store.db import connect
from federation.core.errors import FederationError, ForkError, InputError, MalformedError, NotFoundError, RollbackError, \
    SignatureError, StorageError
from federation.core.names import check_feed_name
from federation.core.trustfile import MAX_TRUST_BYTES, Freshness, TrustFile, check_cosignatures, parse_trust, quorum_cosignatures, \
    parse_trust_unverified, verified_signers
from federation.store.mirror import set_trusted_keys
from federation.store.trust_chain import TrustChain, latest_trust, trust_version

__all__ = ["TrustChain", "TrustPolicy", "follow_with_trust", "install_trust_routes", "policy_for", "publish_trust",
           "verify_successor"]

MAX_ROTATIONS_PER_SYNC = 64

log = logging.getLogger("federation.trust")


def verify_successor(current: TrustFile, data: bytes) -> TrustFile:
    """Accept ``data`` as the version after ``current``, or raise.

    * ``RollbackError``: an older or equal version (a replayed old file);
    * ``MalformedError``: a skipped version, or a different origin;
    * ``SignatureError``: under threshold of N's keys or of its own.
    """
    cand = parse_trust_unverified(data)
    if cand.version <= current.version:
        raise RollbackError(f"offered trust version {cand.version} for {cand.origin} is not newer than the "
                            f"accepted version {current.version} (replayed old trust file)")
    if cand.version != current.version + 1:
        raise MalformedError(f"offered trust version {cand.version} does not directly follow the accepted "
                             f"version {current.version}: versions must not be skipped")
    if cand.origin != current.origin:
        raise MalformedError(f"trust version {cand.version} is for origin {cand.origin!r}, "
                             f"not {current.origin!r}")
    by_old = verified_signers(cand.note, current.trust_keys)
    if len(by_old) < current.threshold:
        raise SignatureError(f"trust version {cand.version} is signed by {len(by_old)} of the {current.threshold} "
                             f"required trust keys of version {current.version}")
    by_new = verified_signers(cand.note, cand.trust_keys)
    if len(by_new) < cand.threshold:
        raise SignatureError(f"trust version {cand.version} is signed by {len(by_new)} of the {cand.threshold} "
                             f"required trust keys of version {cand.version} itself")
    return cand


def publish_trust(conn: sqlite3.Connection, feed: str, data: bytes) -> TrustFile:
    """Publisher side: add a trust file to the chain it serves.

    The first file must verify on its own; later ones must be valid
    successors, exactly as mirrors will check them.
    """
    chain = TrustChain(conn, feed)
    current = chain.current()
    try:
        trust = parse_trust(data) if current is None else verify_successor(current, data)
    except (MalformedError, SignatureError, RollbackError) as e:
        raise InputError(f"trust file not publishable for feed {feed}: {e}") from None
    if current is None:
        chain.start(trust)
    else:
        chain.append(trust)
    return trust


# ---- mirror: follow with a trust file, sync under its policy -----------------------


def follow_with_trust(mirror, name: str, trust: TrustFile, urls: list[str], max_age: int | None = None,
                      token_env: str | None = None):
    """Follow a feed under ``trust``; ``max_age`` (lookups' freshness bound)
    defaults to the trust file's ``max_staleness_seconds``.

    Order: the trust row first, then the follow row. A crash between them
    leaves an orphan trust row that a retry accepts (same bytes); the other
    order could leave a followed feed that syncs without its policy.
    """
    check_feed_name(name)  # before the trust row: nothing is written for a bad name
    TrustChain(mirror.conn, name).start(trust)
    return mirror.follow(name, trust.origin, [k.vkey for k in trust.log_keys], urls,
                         trust.max_staleness if max_age is None else max_age, witnessed=True, token_env=token_env)


@dataclass
class TrustPolicy:
    """Acceptance policy for ``sync.sync_feed``: follow rotations, then require
    the witness quorum and freshness of the trust file on every checkpoint."""

    chain: TrustChain
    clock: object = time.time

    def now(self) -> int:
        return int(self.clock())  # type: ignore[operator]

    async def refresh(self, fetcher) -> TrustFile:
        """Follow the upstream's trust chain from our version, one stored step at a time."""
        current = self.chain.current()
        if current is None:
            raise StorageError(f"feed {self.chain.feed} has no trust file")
        raw = await fetcher.get("trust/latest", MAX_TRUST_BYTES)
        latest = parse_trust_unverified(raw)
        if latest.origin != current.origin:
            raise MalformedError(f"upstream trust file is for {latest.origin!r}, not {current.origin!r}")
        if latest.version < current.version:
            raise RollbackError(f"upstream serves trust version {latest.version} for {current.origin}, older than "
                                f"the accepted version {current.version} (replayed old trust file)")
        if latest.version == current.version:
            if latest.note.text != current.note.text:
                raise ForkError(f"upstream serves a different trust file under the accepted version "
                                f"{current.version} for {current.origin}")
            return current
        if latest.version - current.version > MAX_ROTATIONS_PER_SYNC:
            raise MalformedError(f"upstream trust chain jumps {latest.version - current.version} versions, over "
                                 f"{MAX_ROTATIONS_PER_SYNC} per sync")
        while current.version < latest.version:
            n = current.version + 1
            data = raw if n == latest.version else await fetcher.get(f"trust/{n}", MAX_TRUST_BYTES)
            nxt = verify_successor(current, data)
            await asyncio.to_thread(self.chain.append, nxt, self._keys_of(nxt, current))
            current = nxt
        return current

    def _keys_of(self, trust: TrustFile, before: TrustFile) -> Callable[[sqlite3.Connection], None]:
        """The mirror's write of ``trust``'s log keys and staleness window, for
        the rotation step's transaction."""
        keys = [k.vkey for k in trust.log_keys]
        window = (before.max_staleness, trust.max_staleness)
        return lambda conn: set_trusted_keys(conn, self.chain.feed, trust.origin, keys, window)

    def check(self, signed: SignedCheckpoint) -> Freshness:
        """The checkpoint's witness quorum and freshness (``check_cosignatures``).

        Trusted witnesses' cosignatures that were not counted (bad, or
        future-dated) do not fail the check while a quorum of others is
        good; they are logged here and listed in the returned ``ignored``.
        """
        trust = self.chain.current()
        if trust is None:
            raise StorageError(f"feed {self.chain.feed} has no trust file")
        cp = signed.checkpoint
        fresh = check_cosignatures(trust, signed.raw, self.now(), f"{cp.origin} checkpoint of size {cp.size}")
        for why in fresh.ignored:
            log.warning("%s: %s checkpoint of size %d: not counted: %s", self.chain.feed, cp.origin, cp.size, why,
                        extra={"feed": self.chain.feed, "kind": "signature"})
        self.chain.record_freshness(fresh.quorum_time)
        return fresh


    def quorum_time(self, note: bytes | None) -> int | None:
        """The witness quorum time of a stored note under the current trust
        version, however old; None when there is none it would count."""
        trust = self.chain.current()
        if note is None or trust is None:
            return None
        try:
            return quorum_cosignatures(trust, note, self.now()).quorum_time
        except FederationError:
            return None


def policy_for(mirror, name: str) -> TrustPolicy | None:
    """The policy of a followed feed that has a trust file, else None."""
    chain = TrustChain(mirror.conn, name)
    return TrustPolicy(chain) if chain.current() is not None else None


# ---- serving the chain ------------------------------------------------------------


_WHICH_RE = re.compile(r"latest|[1-9][0-9]{0,10}")  # docs/openapi.yaml


def install_trust_routes(db_paths: list[Path | str], served: list[list[str] | None] | None = None):
    """Server extension: ``GET /feeds/NAME/trust/latest`` and ``.../trust/<N>``
    from the ``trust_chain`` tables of ``db_paths`` (first match wins).

    ``served[i]``: the feeds of ``db_paths[i]`` the node serves (all when
    None). A chain of any other feed (not in the node's config, followed but
    not relayed) answers 404 like a feed that does not exist.
    """
    only = [None if n is None else set(n) for n in (served or [None] * len(db_paths))]

    def install(app: web.Application) -> None:
        conns: list[sqlite3.Connection] = []

        def lookup(name: str, which: str) -> bytes | None:
            if not conns:
                conns.extend(connect(p, readonly=True) for p in db_paths)
            for conn, names in zip(conns, only):
                if names is not None and name not in names:
                    continue
                data = latest_trust(conn, name) if which == "latest" else trust_version(conn, name, int(which))
                if data is not None:
                    return data
            return None

        async def get_trust(request: web.Request) -> web.Response:
            which = request.match_info["which"]
            # Full match, ASCII digits: str.isdigit() also takes "\u00b2", which int() refuses (a 500).
            if not _WHICH_RE.fullmatch(which):
                raise NotFoundError("not a trust version")
            data = lookup(request.match_info["name"], which)
            if data is None:
                raise NotFoundError("no such trust file")
            # A numbered version never changes; "latest" does.
            cache = "public, max-age=2" if which == "latest" else "public, max-age=31536000, immutable"
            return web.Response(body=data, content_type="text/plain", charset="utf-8",
                                headers={"Cache-Control": cache})

        async def close(app: web.Application):
            yield
            for c in conns:
                c.close()

        app.router.add_get("/feeds/{name}/trust/{which}", get_trust)
        app.cleanup_ctx.append(close)

    return install
