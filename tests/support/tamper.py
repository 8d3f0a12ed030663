"""An adversarial network path and forged logs.

* ``TamperProxy`` is a real HTTP proxy between a mirror and an upstream
  server; rules rewrite (or replace) responses. ``proxy.clear()`` removes all
  tampering, ``proxy.upstream = url`` points it at another server (a fork).
* ``forge_append`` appends arbitrary raw entries to a publisher DB's log and
  signs the new checkpoint with the real key: a validly signed tree holding
  whatever bytes a test wants (malformed msgpack, wrong seals, ...).
* ``flip_signature``, ``flip_bundle_entry``, ``map_bundle``: bytes changed in place.
"""
from __future__ import annotations

import asyncio
import base64
import gzip
import re
import sqlite3
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

from federation.core import entries as E
from federation.core.checkpoint import Checkpoint
from federation.core.layout import TILE_WIDTH, encode_index
from federation.core.lthash import LtHash16
from federation.core.merkle import CompactRange
from federation.core.note import NoteSignature, Signer, parse_note
from federation.core.tiles import encode_bundle, parse_bundle
from federation.store.db import connect, write_txn
from federation.store.tilestore import TileStore

from support.feeds import NAME, feed_url
from support.loopback import start_app


# ---- notes and bundles ---------------------------------------------------------

def flip_signature(note: bytes, byte: int = 10) -> bytes:
    """The same note with one byte of each signature (not the key ID) flipped."""
    n = parse_note(note)
    sigs = [NoteSignature(s.name, s.key_id, _flip(s.signature, byte)) for s in n.signatures]
    return n.text + b"\n" + b"".join(s.line() for s in sigs)


def _flip(b: bytes, i: int, mask: int = 0x01) -> bytes:
    out = bytearray(b)
    out[i] ^= mask
    return bytes(out)


def map_bundle(data: bytes, fn) -> bytes:
    """Re-encode a bundle after ``fn(list_of_entries)`` edited its entries in place."""
    items = parse_bundle(data, count_entries(data))
    fn(items)
    return encode_bundle(items)


def flip_bundle_entry(data: bytes, offset: int) -> bytes:
    """Flip the last byte of entry ``offset`` of a bundle, keeping it parseable."""
    def fn(items):
        items[offset] = _flip(items[offset], len(items[offset]) - 1)
    return map_bundle(data, fn)


def count_entries(data: bytes) -> int:
    """How many length-prefixed entries a well-formed bundle holds."""
    pos = n = 0
    while pos < len(data):
        pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
        n += 1
    return n


# ---- forged logs ---------------------------------------------------------------

def clone_db(src: Path | str, dst: Path | str) -> Path:
    """A consistent copy of a (WAL-mode) SQLite database."""
    s = sqlite3.connect(str(src))
    d = sqlite3.connect(str(dst))
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()
    return Path(dst)


def feed_head(db: Path | str, name: str = NAME) -> tuple[int, int, int, bytes]:
    """(size, version, count, digest) of a publisher feed."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT size, version, count, digest FROM feeds WHERE name=?", (name,)).fetchone()
    finally:
        conn.close()


def forge_append(db: Path | str, signer: Signer, raw_entries: list[bytes], name: str = NAME) -> bytes:
    """Append ``raw_entries`` verbatim to the log of ``name`` in publisher DB ``db``
    and sign the resulting tree with ``signer``; return the new signed checkpoint.

    Nothing is validated and the active set is not touched: this builds a
    validly signed, correctly hashed tree whose entries may be garbage.
    """
    conn = connect(db)
    try:
        with write_txn(conn):
            fid, origin, size, compact = conn.execute(
                "SELECT id, origin, size, compact FROM feeds WHERE name=?", (name,)).fetchone()
            log = TileStore(conn, fid).appender(size, CompactRange.from_bytes(compact))
            log.append(list(raw_entries))
            log.finish()
            cp = Checkpoint(origin, log.compact.size, log.compact.root()).sign([signer])
            conn.execute("UPDATE feeds SET size=?, compact=?, checkpoint=? WHERE id=?",
                         (log.compact.size, log.compact.to_bytes(), cp, fid))
    finally:
        conn.close()
    return cp


def forged_version(db: Path | str, ops: list[E.Add], name: str = NAME, *, digest_flip: bool = False,
                   count_delta: int = 0, version_delta: int = 1, t: int = 1_700_000_000) -> list[bytes]:
    """Encoded entries of a next version that adds ``ops`` (all new hashes),
    closed by a seal that is right unless told to lie about digest, count or version."""
    _, version, count, digest = feed_head(db, name)
    ops = [E.Add(a.hash_type, a.value, a.case, a.labels, t) for a in ops]
    d = LtHash16(digest).add([E.add_element(a) for a in ops]).digest()
    if digest_flip:
        d = _flip(d, 0)
    seal = E.Seal(version + version_delta, t, count + len(ops) + count_delta, d)
    return [E.encode(a) for a in ops] + [E.encode(seal)]


# ---- the tampering proxy -------------------------------------------------------

class TamperProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (a base URL).

    Each request runs through ``rules`` in order; a rule is an async callable
    ``rule(proxy, request, path) -> web.StreamResponse | None`` (``None``:
    not mine). Unclaimed requests are forwarded unchanged. ``log`` counts
    the paths requested.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.rules: list = []
        self.log: list[str] = []
        self.url: str | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # lifecycle
    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner, self.url = await start_app(app, port)
        self.port = int(self.url.rsplit(":", 1)[1])
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.url

    async def stop(self) -> None:
        """Stop listening (connections to the port are then refused)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def feed_url(self, name: str = NAME) -> str:
        return feed_url(self.url, name)

    # rules
    def add(self, *rules) -> "TamperProxy":
        self.rules.extend(rules)
        return self

    def clear(self) -> None:
        self.rules.clear()

    def requests(self, pattern: str) -> list[str]:
        return [p for p in self.log if re.search(pattern, p)]

    async def fetch(self, path: str) -> tuple[int, str, bytes]:
        """GET ``path`` from upstream: (status, content type, decoded body)."""
        async with self._session.get(f"{self.upstream}/{path}") as r:
            return r.status, r.content_type, await r.read()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        self.log.append(path)
        for rule in list(self.rules):
            resp = await rule(self, request, path)
            if resp is not None:
                return resp
        status, ctype, body = await self.fetch(path)
        return web.Response(status=status, body=body, content_type=ctype)


CHECKPOINT = r"/checkpoint$"
BUNDLES = r"/tile/entries/"
LEAF_TILES = r"/tile/0/"


def bundle_pattern(entry_index: int) -> str:
    return rf"/tile/entries/{encode_index(entry_index // TILE_WIDTH)}(\.p/\d+)?$"


def leaf_tile_pattern(leaf_index: int) -> str:
    return rf"/tile/0/{encode_index(leaf_index // TILE_WIDTH)}(\.p/\d+)?$"


def rewrite(pattern: str, fn):
    """Rewrite the upstream body of 200 responses with ``fn(path, body) -> body``."""
    async def rule(proxy, request, path):
        if not re.search(pattern, path):
            return None
        status, ctype, body = await proxy.fetch(path)
        if status == 200:
            body = fn(path, body)
        return web.Response(status=status, body=body, content_type=ctype)
    return rule


def upstream(pattern: str, base: str):
    """Forward matching requests to another server (base URL) instead."""
    async def rule(proxy, request, path):
        if not re.search(pattern, path):
            return None
        async with proxy._session.get(f"{base.rstrip('/')}/{path}") as r:
            return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)
    return rule


def respond(pattern: str, body: bytes, status: int = 200, content_type: str = "application/octet-stream"):
    async def rule(proxy, request, path):
        if re.search(pattern, path):
            return web.Response(status=status, body=body, content_type=content_type)
        return None
    return rule


def status(pattern: str, code: int):
    async def rule(proxy, request, path):
        if re.search(pattern, path):
            return web.Response(status=code, text=f"injected {code}\n")
        return None
    return rule


def nth(pattern: str, n: int, inner):
    """Apply ``inner`` only to the ``n``-th (1-based) request matching ``pattern``."""
    seen = Counter()

    async def rule(proxy, request, path):
        if not re.search(pattern, path):
            return None
        seen["n"] += 1
        return await inner(proxy, request, path) if seen["n"] == n else None
    return rule


def first_time(inner):
    """Apply ``inner`` only to the first request of each path (a flaky tamperer)."""
    seen: set[str] = set()

    async def rule(proxy, request, path):
        if path in seen:
            return None
        resp = await inner(proxy, request, path)
        if resp is not None:
            seen.add(path)
        return resp
    return rule


def flip_entry(entry_index: int):
    """Flip a byte inside log entry ``entry_index`` in the bundle that holds it."""
    off = entry_index % TILE_WIDTH
    return rewrite(bundle_pattern(entry_index), lambda path, body: flip_bundle_entry(body, off))


def flip_leaf_hash(leaf_index: int, byte: int = 0):
    """Flip a byte of leaf hash ``leaf_index`` in the level-0 tile that holds it."""
    pos = (leaf_index % TILE_WIDTH) * 32 + byte
    return rewrite(leaf_tile_pattern(leaf_index), lambda path, body: _flip(body, pos))


def oversize(pattern: str, nbytes: int = 10 * 1024 * 1024, chunked: bool = False):
    """A huge body: with a Content-Length, or streamed chunked without one."""
    async def rule(proxy, request, path):
        if not re.search(pattern, path):
            return None
        if not chunked:
            return web.Response(body=b"\x00" * nbytes, content_type="application/octet-stream")
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"\x00" * 65536
        try:
            for _ in range(nbytes // len(chunk)):
                await resp.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp
    return rule


def gzip_bomb(pattern: str, nbytes: int = 10 * 1024 * 1024):
    """A small gzip body (Content-Encoding: gzip) that inflates to ``nbytes``."""
    body = gzip.compress(b"\x00" * nbytes, 9)

    async def rule(proxy, request, path):
        if re.search(pattern, path):
            return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                    "Content-Type": "application/octet-stream"})
        return None
    return rule


def hang(pattern: str, seconds: float = 30.0):
    """Never answer (within the test's lifetime)."""
    async def rule(proxy, request, path):
        if re.search(pattern, path):
            await asyncio.sleep(seconds)
            return web.Response(status=504)
        return None
    return rule


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()
