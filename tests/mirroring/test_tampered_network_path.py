"""Adversarial network path: a real HTTP proxy on 127.0.0.1 between mirror and
publisher rewrites responses, or points the mirror at forged / forked logs.

For every attack: the right exception class and ``kind``, a message naming
what failed, the mirror exactly at its last good version (``snapshot``
before == after, ``audit() == []``), and once the tampering is removed the
next sync succeeds (nothing was poisoned).
"""
from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass

import aiohttp
import msgpack
import pytest
from aiohttp import web

from federation.core import entries as E
from federation.core.checkpoint import Checkpoint
from federation.core.errors import DigestError, ForkError, MalformedError, RollbackError, SignatureError, TransportError
from federation.core.merkle import CompactRange
from federation.core.note import MAX_NOTE_BYTES, Signer, parse_note, sign_note
from federation.core.readiness import assess
from federation.core.tiles import encode_bundle, parse_bundle
from federation.net.fetcher import Fetcher
from federation.store.publisher import Publisher
from federation.sync.orchestrator import sync_feed

from support.feeds import NAME, ORIGIN, adds, feed_url
from support.loopback import closed_port
from support.mirror_state import assert_matches_publisher, expect_failure, snapshot, sync
from support.paths import REPO_ROOT
from support.tamper import (BUNDLES, CHECKPOINT, LEAF_TILES, TamperProxy, bundle_pattern, clone_db, feed_head,
                            first_time, flip_bundle_entry, flip_entry, flip_leaf_hash, flip_signature, forge_append,
                            forged_version, gzip_bomb, hang, leaf_tile_pattern, map_bundle, nth, oversize, respond,
                            rewrite, status, upstream)

pytestmark = pytest.mark.timeout(30)

REPO = str(REPO_ROOT)


@dataclass
class World:
    pub: object  # conftest.PubFeed
    server: str
    proxy: TamperProxy
    m: object  # Mirror, following the feed through the proxy
    serve: object
    make_publisher: object
    tmp_path: object
    cp_v1: bytes  # the signed checkpoint of version 1

    @property
    def size(self) -> int:
        return self.pub.head().size

    def root(self) -> bytes:
        return CompactRange.from_bytes(self.pub.head().compact).root()

    async def forged(self, raw_entries: list[bytes], filename: str = "forged.db") -> str:
        """Serve a copy of the genuine log with ``raw_entries`` appended and
        validly signed; return its base URL and point the proxy at it."""
        db = clone_db(self.pub.path, self.tmp_path / filename)
        forge_append(db, self.pub.signer, raw_entries)
        self.proxy.upstream = await self.serve(db)
        return self.proxy.upstream

    async def recovers(self) -> None:
        """Remove all tampering; a new genuine version then syncs cleanly."""
        self.proxy.clear()
        self.proxy.upstream = self.server
        self.pub.publish_adds(7, "recovery")
        r = await sync(self.m)
        assert r.changed and r.version == self.pub.head().version
        assert_matches_publisher(self.m, self.pub)
        assert self.m.get(NAME).last_error is None


@pytest.fixture
async def w(publisher, server, proxy, make_mirror, serve, make_publisher, tmp_path) -> World:
    """Mirror at version 2 (size 327: v1 = 300 adds over two bundles, v2 = 20 adds
    and 5 withdrawals), following the publisher through a transparent proxy."""
    m = make_mirror("m.db", proxy.feed_url())
    _, v1 = publisher.publish_adds(300, "case1")
    cp_v1 = publisher.head().checkpoint
    publisher.publish([E.Withdraw("hash_error", 0, a.hash_type, a.value) for a in v1[:5]] + adds(20, "case2"))
    await sync(m)
    assert (m.get(NAME).version, m.get(NAME).applied_size) == (2, 327)
    assert_matches_publisher(m, publisher)
    proxy.log.clear()
    return World(publisher, server, proxy, m, serve, make_publisher, tmp_path, cp_v1)


# ---- entry bundles ---------------------------------------------------------------

def _swap(start):
    def swap(items):
        o = start % 256
        items[o], items[o + 1] = items[o + 1], items[o]
    return lambda path, body: map_bundle(body, swap)


BUNDLE_TAMPERING = {
    "flipped byte in an entry": (lambda s: (lambda p, b: flip_bundle_entry(b, s % 256)),
                                 ["does not match the signed tree"]),
    "two entries swapped": (_swap, ["does not match the signed tree"]),
    "truncated by one byte": (lambda s: (lambda p, b: b[:-1]), ["truncated"]),
    "one entry too many": (lambda s: (lambda p, b: b + encode_bundle([b"\x90"])), ["holds", "entries, want"]),
    "empty body": (lambda s: (lambda p, b: b""), ["holds 0 entries"]),
    "dangling length byte": (lambda s: (lambda p, b: b + b"\x00"), ["truncated length prefix"]),
}


@pytest.mark.parametrize("how", list(BUNDLE_TAMPERING))
async def test_tampered_entry_bundle(w, how):
    start = w.size
    w.pub.publish_adds(300, "case3")  # v3: entries 327..627, bundles 1 and 2
    make, words = BUNDLE_TAMPERING[how]
    w.proxy.add(rewrite(bundle_pattern(start), make(start)))
    await expect_failure(w.m, MalformedError, "malformed", "tile/entries/001", *words)
    await w.recovers()


async def test_tampered_later_version_keeps_the_earlier_ones(w):
    """A bad entry in version 4 of a sync that also brings version 3: the
    mirror applies v3 whole and stops there, then resumes cleanly."""
    w.pub.publish_adds(300, "case3")
    v3_size = w.size
    w.pub.publish_adds(300, "case4")
    w.proxy.add(flip_entry(v3_size + 200))
    with pytest.raises(MalformedError, match=f"entry {v3_size + 200} does not match the signed tree"):
        await sync(w.m)
    f = w.m.get(NAME)
    assert (f.version, f.applied_size, f.count) == (3, v3_size, 615)
    assert w.m.audit(NAME) == []
    assert w.m.conn.execute("SELECT count(*) FROM hashes WHERE case_id='case4'").fetchone()[0] == 0
    await w.recovers()


async def test_bundles_of_a_fork_with_genuine_tiles(w):
    """Checkpoint and hash tiles are genuine, the bundles come from another
    log of the same shape: entries do not hash to the signed leaves."""
    fork_db = clone_db(w.pub.path, w.tmp_path / "fork.db")
    start = w.size
    w.pub.publish_adds(50, "case3")
    fp = Publisher(fork_db)
    try:
        fp.publish(NAME, adds(50, "case3"), w.pub.signer)
    finally:
        fp.close()
    w.proxy.add(upstream(BUNDLES, await w.serve(fork_db)))
    await expect_failure(w.m, MalformedError, "malformed", f"entry {start} does not match the signed tree")
    await w.recovers()


# ---- hash tiles --------------------------------------------------------------------

@pytest.mark.parametrize("where", ["first new leaf, full tile", "last new leaf, partial tile"])
async def test_flipped_byte_in_hash_tile(w, where):
    """Size 327 -> 628: leaf 327 is in full tile 0/001 (whose level-1 parent
    hash is what a root computation reads), leaf 627 in partial tile 0/002.p/116.
    Either way the hash tiles were tampered with: 'malformed', not 'fork'."""
    start = w.size
    w.pub.publish_adds(300, "case3")
    w.proxy.add(flip_leaf_hash(start if where.startswith("first") else w.size - 1))
    await expect_failure(w.m, MalformedError, "malformed", "hash tiles do not hash to the signed root",
                         f"size {w.size}")
    await w.recovers()


async def test_flipped_hash_tile_on_first_sync_is_not_a_fork(w, make_mirror):
    """An empty mirror cannot be forked from: a tampered leaf tile on its
    first sync is tampering. (Full level-0 tiles are not even fetched then --
    bundles are checked against level-1 hashes -- so the right-edge partial
    tile, which is, is the one tampered with.)"""
    m = make_mirror("fresh.db", w.proxy.feed_url())
    w.proxy.add(flip_leaf_hash(300))
    await expect_failure(m, MalformedError, "malformed", "do not hash to the signed root")
    w.proxy.clear()
    await sync(m)
    assert_matches_publisher(m, w.pub)


async def test_hash_tile_of_wrong_length(w):
    w.pub.publish_adds(10, "case3")
    w.proxy.add(rewrite(leaf_tile_pattern(w.size - 1), lambda p, b: b[:-1]))
    await expect_failure(w.m, MalformedError, "malformed", f"tile/0/001.p/{w.size - 256}", "bytes, want")
    await w.recovers()


async def test_flipped_hash_tile_served_only_once_is_not_a_fork(w):
    """A tamperer (or a flaky cache) corrupts a leaf tile once and serves it
    correctly when asked again. Nothing here was signed twice, so this is
    tampering ('malformed'), not a split view ('fork')."""
    w.pub.publish_adds(300, "case3")
    w.proxy.add(first_time(flip_leaf_hash(w.size - 1)))  # the partial tile, read again for the root
    await expect_failure(w.m, MalformedError, "malformed")
    await w.recovers()


async def test_tampered_old_leaves_are_detected_and_change_nothing(w):
    """Leaf hashes below the mirror's size that the sync reads (the tile that
    the consistency proof from the mirror's size needs, the bundle it resumes
    in) are authenticated like new ones: tampering there is caught, not a fork."""
    w.pub.publish_adds(300, "case3")
    w.proxy.add(flip_leaf_hash(300))  # in tile 1, already applied
    await expect_failure(w.m, MalformedError, "malformed", "tile/0/001 does not match its entry in tile/1/000")
    w.proxy.clear()
    w.proxy.add(rewrite(bundle_pattern(300), lambda p, b: flip_bundle_entry(b, 300 % 256)))  # entry 300, applied
    await expect_failure(w.m, MalformedError, "malformed", "tile/entries/001", "does not match the signed tree")
    await w.recovers()
    assert w.proxy.requests(LEAF_TILES)  # the tampered responses were indeed served


# ---- checkpoints ---------------------------------------------------------------------

async def test_flipped_checkpoint_signature(w):
    w.pub.publish_adds(10)
    w.proxy.add(rewrite(CHECKPOINT, lambda p, b: flip_signature(b)))
    await expect_failure(w.m, SignatureError, "signature", f"signature by {ORIGIN}+", "does not verify")
    await w.recovers()


async def test_checkpoint_with_a_good_and_a_bad_signature_by_the_trusted_key(w):
    w.pub.publish_adds(10)
    w.proxy.add(rewrite(CHECKPOINT, lambda p, b: b + flip_signature(b)[len(parse_note(b).text) + 1:]))
    await expect_failure(w.m, SignatureError, "signature", "does not verify")
    await w.recovers()


async def test_checkpoint_signed_with_a_wrong_key(w):
    w.pub.publish_adds(10)
    evil = Signer.generate(ORIGIN)  # same name, other key
    w.proxy.add(respond(CHECKPOINT, Checkpoint(ORIGIN, w.size, w.root()).sign([evil])))
    await expect_failure(w.m, SignatureError, "signature", "not signed by any trusted key")
    await w.recovers()


async def test_checkpoint_with_unknown_extra_signature_is_accepted(w):
    """Spec: signatures by unknown keys are ignored."""
    w.pub.publish_adds(10)
    other = Signer.generate("witness.example/w")
    w.proxy.add(rewrite(CHECKPOINT, lambda p, b: b + parse_note(Checkpoint(ORIGIN, w.size, w.root()).sign([other]))
                        .signatures[0].line()))
    r = await sync(w.m)
    assert r.version == 3 and w.m.audit(NAME) == []


async def test_checkpoint_for_another_origin_signed_by_the_trusted_key(w):
    w.pub.publish_adds(10)
    s = w.pub.signer
    w.proxy.add(respond(CHECKPOINT, Checkpoint("evil.example/x", w.size, w.root()).sign([s])))
    await expect_failure(w.m, SignatureError, "signature", "origin", "evil.example/x")
    await w.recovers()


async def test_checkpoint_body_changed_after_signing(w):
    w.pub.publish_adds(10)
    w.proxy.add(rewrite(CHECKPOINT, lambda p, b: b.replace(f"\n{w.size}\n".encode(), f"\n{w.size + 1}\n".encode())))
    await expect_failure(w.m, SignatureError, "signature", "does not verify")
    await w.recovers()


@pytest.mark.parametrize("body, words", [
    (b"garbage\n", ["no blank line"]),
    (b"", ["newline"]),
    (b"\xff\xfe\n\n", ["UTF-8"]),
])
async def test_unparseable_checkpoint(w, body, words):
    w.proxy.add(respond(CHECKPOINT, body))
    await expect_failure(w.m, MalformedError, "malformed", *words)
    await w.recovers()


async def test_checkpoint_with_extension_line(w):
    w.pub.publish_adds(10)
    text = Checkpoint(ORIGIN, w.size, w.root()).body() + b"extra line\n"
    w.proxy.add(respond(CHECKPOINT, sign_note(text, [w.pub.signer])))
    await expect_failure(w.m, MalformedError, "malformed", "extension lines")
    await w.recovers()


# ---- rollback and forks ----------------------------------------------------------------

async def test_rollback_to_an_older_checkpoint(w):
    w.pub.publish_adds(10)
    w.proxy.add(respond(CHECKPOINT, w.cp_v1))
    await expect_failure(w.m, RollbackError, "rollback", "checkpoint size 301 is smaller than verified size 327")
    await w.recovers()


async def test_rollback_to_the_empty_tree(w):
    s = w.pub.signer
    w.proxy.add(respond(CHECKPOINT, Checkpoint(ORIGIN, 0, CompactRange().root()).sign([s])))
    await expect_failure(w.m, RollbackError, "rollback", "size 0")
    await w.recovers()


async def _fork(w, versions):
    """A second publisher DB with the same key and origin, other entries."""
    fork = w.make_publisher("fork.db", w.pub.signer)
    for n in versions:
        fork.publish_adds(n, "forked")
    w.proxy.upstream = await w.serve(fork.path)
    return fork


async def test_fork_of_the_same_size(w):
    fork = await _fork(w, [300, 25])  # 301 + 26 entries: size 327, like the mirror
    assert fork.head().size == w.m.get(NAME).applied_size
    await expect_failure(w.m, ForkError, "fork", "two signed roots for size 327")
    await w.recovers()


async def test_bigger_fork_that_does_not_extend_the_mirror(w):
    await _fork(w, [300, 300])
    await expect_failure(w.m, ForkError, "fork", "signed tree of size 602 does not extend the mirror's tree",
                         "previously verified size 327")
    await w.recovers()


async def test_bigger_fork_sharing_a_prefix(w):
    """Same v1 (byte for byte), then another v2 and v3: the fork extends the
    mirror's v1 but not its v2."""
    v1 = [E.decode(e) for e in parse_bundle(w.pub.pub.tile(w.pub.head().id, -1, 0, 256), 256)
          + parse_bundle(w.pub.pub.tile(w.pub.head().id, -1, 1, 45), 45)]
    ops = [e for e in v1 if isinstance(e, E.Add)]
    fork = w.make_publisher("fork.db", w.pub.signer)
    fork.pub.publish(NAME, ops, w.pub.signer, now=ops[0].time)
    assert fork.head().checkpoint == w.cp_v1  # identical v1
    fork.publish_adds(40, "other")
    fork.publish_adds(40, "other2")
    w.proxy.upstream = await w.serve(fork.path)
    await expect_failure(w.m, ForkError, "fork", "signed tree of size 383 does not extend the mirror's tree")
    await w.recovers()


@pytest.mark.parametrize("fork_adds, exc, kind, words", [
    (400, ForkError, "fork", ["signed tree of size 1029 does not extend", "previously verified size 929"]),
    (300, ForkError, "fork", ["two signed roots for size 929"]),
    (100, RollbackError, "rollback", ["checkpoint size 729 is smaller than verified size 929"]),
])
async def test_fork_after_a_partial_sync(w, fork_adds, exc, kind, words):
    """The mirror applied v3 of a sync to v4 (so it holds a verified
    checkpoint ahead of what it applied); a fork sharing v3 must be refused
    against that checkpoint, not only against the applied tree."""
    w.pub.publish_adds(300, "case3")  # v3: 327..628
    fork_db = clone_db(w.pub.path, w.tmp_path / "fork.db")
    w.pub.publish_adds(300, "case4")  # v4: ..929
    w.proxy.add(flip_entry(w.size - 1))  # v4's seal, in a bundle after v3's
    with pytest.raises(MalformedError):
        await sync(w.m)
    f = w.m.get(NAME)
    assert (f.version, f.applied_size, f.verified().size) == (3, 628, 929)
    w.proxy.clear()
    fp = Publisher(fork_db)
    try:
        fp.publish(NAME, adds(fork_adds, "evil"), w.pub.signer)
    finally:
        fp.close()
    w.proxy.upstream = await w.serve(fork_db)
    await expect_failure(w.m, exc, kind, *words)
    await w.recovers()


# ---- validly signed trees holding bad entries ---------------------------------------------

def _add_map(**over):
    m = {"v": 1, "op": "add", "type": "md5", "hash": b"\x01" * 16, "case": "c", "labels": [], "time": 5}
    m.update(over)
    return msgpack.packb(m, use_bin_type=True)


BAD_ENTRIES = {
    "not msgpack": (b"\xc1", "not a msgpack fixmap"),
    "truncated msgpack": (E.encode(E.Add("md5", b"\x02" * 16, "c", (), 5))[:-1], "entry ends"),
    "trailing bytes": (E.encode(E.Add("md5", b"\x02" * 16, "c", (), 5)) + b"\x00", "bytes after the entry"),
    "not a map": (msgpack.packb([1, 2, 3]), "not a msgpack fixmap"),
    "unknown op": (msgpack.packb({"v": 1, "op": "delete"}), "unknown entry op"),
    "unknown version": (msgpack.packb({"v": 2, "op": "add"}), "unsupported entry version"),
    "non-canonical integer": (_add_map()[:-1] + b"\xcc\x05", "shortest form"),
    "hash of wrong length": (_add_map(hash=b"\x01" * 15), "md5 hash is 15 bytes"),
    "hash type is a list": (_add_map(type=["md5"]), "type is not a msgpack str"),
    "hash type is a map": (_add_map(type={"md5": 1}), "type is not a msgpack str"),
}


@pytest.mark.parametrize("what", list(BAD_ENTRIES))
async def test_validly_signed_malformed_entry(w, what):
    raw, words = BAD_ENTRIES[what]
    start = w.size
    _, _, count, digest = feed_head(w.pub.path)
    seal = E.encode(E.Seal(3, 5, count, digest))
    good = E.encode(E.Add("md5", b"\x03" * 16, "c", (), 5))
    await w.forged([good, raw, seal])
    await expect_failure(w.m, MalformedError, "malformed", f"entry {start + 1}", words, "tile/entries/001.p/")
    await w.recovers()


async def test_seal_with_wrong_digest(w):
    await w.forged(forged_version(w.pub.path, adds(30, "f"), digest_flip=True))
    await expect_failure(w.m, DigestError, "digest", "version 3", "seal says 345 hashes")
    await w.recovers()


async def test_seal_with_wrong_count(w):
    await w.forged(forged_version(w.pub.path, adds(30, "f"), count_delta=1))
    await expect_failure(w.m, DigestError, "digest", "version 3", "seal says 346 hashes", "computes 345")
    await w.recovers()


async def test_correct_forged_version_is_accepted(w):
    """Control for the two tests above: the same construction with an honest
    seal verifies, so it is the lie that they catch."""
    await w.forged(forged_version(w.pub.path, adds(30, "f")))
    r = await sync(w.m)
    assert r.version == 3 and w.m.get(NAME).count == 315 + 30
    assert w.m.audit(NAME) == []


async def test_seal_skipping_a_version(w):
    await w.forged(forged_version(w.pub.path, adds(3, "f"), version_delta=2))
    await expect_failure(w.m, MalformedError, "malformed", "seal version 4, want 3")
    await w.recovers()


async def test_a_tree_not_ending_in_a_seal_is_malformed_after_its_whole_versions_are_applied(w):
    """docs/PROTOCOL.md section 7 step 6: the check comes after the versions
    before it in the same sync were committed; they stay (each verified on
    its own), the feed reports malformed and is not ready."""
    extra = [E.encode(E.Add("md5", b"\x04" * 16, "c", (), 5))] * 2
    await w.forged(forged_version(w.pub.path, adds(3, "f")) + extra)
    with pytest.raises(MalformedError, match="not at a seal: 2 entries after the last seal") as info:
        await sync(w.m)
    assert info.value.kind == "malformed"
    f = w.m.get(NAME)
    assert (f.version, f.applied_size, f.count) == (3, 327 + 4, 315 + 3)
    assert f.last_error.startswith("malformed: ") and w.m.audit(NAME) == []
    assert w.m.conn.execute("SELECT count(*) FROM hashes WHERE case_id='f'").fetchone()[0] == 3
    assert assess(f, int(time.time())).problem == "failed"  # lookups fail closed until a sync succeeds


@pytest.mark.parametrize("more, width", [(300, 256), (50, 71 + 51)])
async def test_the_first_bundle_is_fetched_again_at_its_new_width_and_checked_whole(w, more, width):
    """The mirror is at 327 = 256 + 71: bundle 1 held 71 entries. The next
    sync fetches bundle 1 at the width the new tree gives it (not .p/71) and
    checks it whole, so an entry below 327 -- already applied -- that differs
    now is malformed (a lenient mirror would hash only the new ones)."""
    w.pub.publish_adds(more, "case3")
    path = "tile/entries/001" + ("" if width == 256 else f".p/{width}")
    w.proxy.add(rewrite(re.escape(path) + "$", lambda p, b: flip_bundle_entry(b, 0)))
    await expect_failure(w.m, MalformedError, "malformed", path, "entry 256 does not match the signed tree"
                         if width < 256 else "the hash of its entries does not match the signed tree")
    assert w.proxy.requests(r"tile/entries/001") and not w.proxy.requests(r"tile/entries/001\.p/71")
    w.proxy.clear()
    w.proxy.log.clear()
    r = await sync(w.m)
    assert r.size == 327 + more + 1 and w.proxy.requests(re.escape(path) + "$")
    assert_matches_publisher(w.m, w.pub)


async def test_checkpoint_not_at_a_seal(w):
    await w.forged([E.encode(E.Add("md5", b"\x04" * 16, "c", (), 5))] * 2)
    await expect_failure(w.m, MalformedError, "malformed", "not at a seal", "2 entries after the last seal")
    await w.recovers()


# ---- transport ------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, code", [(CHECKPOINT, 500), (BUNDLES, 404), (LEAF_TILES, 500), (LEAF_TILES, 404)])
async def test_http_error_status(w, pattern, code):
    w.pub.publish_adds(300, "case3")
    w.proxy.add(status(pattern, code))
    await expect_failure(w.m, TransportError, "transport", f"HTTP {code}", w.proxy.url)
    await w.recovers()


@pytest.mark.parametrize("pattern, chunked", [(LEAF_TILES, False), (LEAF_TILES, True), (BUNDLES, False),
                                              (BUNDLES, True), (CHECKPOINT, False), (CHECKPOINT, True)])
async def test_oversize_response(w, pattern, chunked):
    w.pub.publish_adds(300, "case3")
    w.proxy.add(oversize(pattern, chunked=chunked))
    await expect_failure(w.m, TransportError, "transport", "exceeds")
    await w.recovers()


async def test_barely_oversize_checkpoint(w):
    w.proxy.add(respond(CHECKPOINT, b"a" * (MAX_NOTE_BYTES + 1)))
    await expect_failure(w.m, TransportError, "transport", f"exceeds {MAX_NOTE_BYTES}")
    await w.recovers()


async def test_every_resource_gzipped_by_a_cdn_still_syncs(w):
    """docs/PROTOCOL.md section 2: any response may be content-coded, and bounds
    apply to the decoded body. A full tile of hashes is random: gzip'd it is
    longer than 8,192 bytes, which a bound on Content-Length would refuse."""
    import gzip as gz

    async def cdn(proxy, request, path):
        status_, ctype, body = await proxy.fetch(path)
        if status_ != 200:
            return None
        return web.Response(body=gz.compress(body), headers={"Content-Encoding": "gzip", "Content-Type": ctype,
                                                             "Vary": "Accept-Encoding"})
    w.pub.publish_adds(600, "case3")  # full level-0 tiles 1 and 2 are fetched
    w.proxy.add(cdn)
    r = await sync(w.m)
    assert r.version == 3 and w.proxy.requests(r"tile/0/00[12]$")
    assert_matches_publisher(w.m, w.pub)


@pytest.mark.parametrize("pattern", [BUNDLES, LEAF_TILES, CHECKPOINT])
async def test_gzip_bomb(w, pattern):
    w.pub.publish_adds(300, "case3")
    w.proxy.add(gzip_bomb(pattern))
    await expect_failure(w.m, TransportError, "transport")
    await w.recovers()


HUGE_SYNC = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a runaway fails fast instead of eating the host
from federation.core.errors import FederationError
from federation.store.mirror import Mirror
from federation.sync.orchestrator import sync_once
m = Mirror(sys.argv[1])
try:
    asyncio.run(asyncio.wait_for(sync_once(m, sys.argv[2]), 5))
except FederationError as e:
    print("KIND", e.kind, e)
"""


async def test_validly_signed_checkpoint_of_absurd_size(w):
    """A checkpoint for 2**40 leaves, signed by the log key, whose tiles do not
    exist: the sync must fail on the first missing tile, quickly and in
    bounded memory, not plan 2**32 tile fetches up front (which blocks the
    event loop, so no asyncio timeout can stop it). Run in a subprocess with
    an address-space limit and a wall-clock limit."""
    w.proxy.add(respond(CHECKPOINT, Checkpoint(ORIGIN, 2**40, b"\x07" * 32).sign([w.pub.signer])))
    before = snapshot(w.m)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HUGE_SYNC, str(w.m.path), NAME, env={**os.environ, "PYTHONPATH": REPO},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(8):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("a sync of a 2**40-leaf checkpoint was still running after 8 s")
    assert out.startswith((b"KIND transport", b"KIND malformed")), (out, err[-800:])
    assert snapshot(w.m) == before and w.m.audit(NAME) == []
    await w.recovers()


async def test_connection_refused(w):
    w.pub.publish_adds(10)
    port = w.proxy.port
    await w.proxy.stop()
    e = await expect_failure(w.m, TransportError, "transport", f"127.0.0.1:{port}")
    assert "Connect" in str(e), e
    await w.proxy.start(port)
    await w.recovers()


async def test_server_that_never_answers(w):
    """Bounded in time: a fetcher with a short timeout gives a TransportError."""
    w.pub.publish_adds(300, "case3")
    w.proxy.add(hang(BUNDLES))
    before = snapshot(w.m)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5))
    try:
        async with Fetcher([w.proxy.feed_url()], session=session) as f:
            with pytest.raises(TransportError, match="TimeoutError"):
                async with asyncio.timeout(10):
                    await sync_feed(w.m, NAME, f)
    finally:
        await session.close()
    assert snapshot(w.m) == before and w.m.audit(NAME) == []
    await w.recovers()


async def test_transport_failure_mid_sync_keeps_whole_versions(w):
    """The 3rd bundle request fails: versions wholly in the first bundles are
    applied, nothing of the next one, and the next sync resumes."""
    sizes = [w.pub.publish_adds(100, f"v{i}")[0].size for i in range(3, 9)]  # v3..v8, 101 entries each
    w.proxy.add(nth(BUNDLES, 3, status(BUNDLES, 500)))
    with pytest.raises(TransportError, match="HTTP 500"):
        await sync(w.m, concurrency=1)
    f = w.m.get(NAME)
    # bundles 1 and 2 cover entries up to 768: versions ending at or below it are in.
    done = [s for s in sizes if s <= 768]
    assert (f.version, f.applied_size) == (2 + len(done), done[-1])
    assert w.m.audit(NAME) == []
    first_new = len(w.proxy.requests(BUNDLES))
    await w.recovers()
    resumed = w.proxy.requests(BUNDLES)[first_new:]
    assert resumed[0].endswith(f"tile/entries/{done[-1] // 256:03d}"), resumed


async def test_dead_first_url_falls_back_to_the_second(w, make_mirror):
    m2 = make_mirror("m2.db", [feed_url(f"http://127.0.0.1:{closed_port()}"), w.proxy.feed_url()])
    w.pub.publish_adds(10)
    r = await sync(m2)
    assert r.version == 3
    assert_matches_publisher(m2, w.pub)


async def test_catch_up_fetches_level_one_hashes_not_every_leaf_tile(w):
    """Full bundles are checked against their level-1 hash, so a long catch-up
    holds 1/256 of a hash per new entry and fetches level-0 tiles only at the
    edges (the tile of the mirror's size, for the consistency proof, and the
    right-edge partial tile)."""
    w.pub.publish_adds(5000, "case4")
    w.proxy.log.clear()
    r = await sync(w.m)
    assert (r.old_size, r.version) == (327, 3)
    assert_matches_publisher(w.m, w.pub)
    leaf_tiles = [p for p in w.proxy.requests(LEAF_TILES)]
    assert len(leaf_tiles) == 2, leaf_tiles  # tile/0/001 and the right-edge partial tile
    assert len(w.proxy.requests(r"/tile/entries/")) == (r.size - 1) // 256 - 327 // 256 + 1


# ---- versions too big for memory are staged --------------------------------------

@pytest.fixture
def small_spill(monkeypatch):
    from federation.core import verify
    monkeypatch.setattr(verify, "SPILL_AT", 100)  # stage any version of more than 100 entries


async def test_big_versions_are_staged_and_applied_whole(w, small_spill, monkeypatch):
    staged = []
    real_stage = type(w.m).stage
    monkeypatch.setattr(type(w.m), "stage", lambda self, name, start, enc: (staged.append((start, len(enc))),
                                                                          real_stage(self, name, start, enc)))
    w.pub.publish_adds(1000, "big")   # one version of 1,001 entries, staged in pieces
    w.pub.publish_adds(7, "small")    # held in memory
    r = await sync(w.m)
    assert (r.old_version, r.version) == (2, 4)
    assert staged[0] == (327, 100) and sum(n for _, n in staged) == 1001  # the big version, whole
    assert [s for s, _ in staged] == list(range(327, 327 + 1001, 100))
    assert_matches_publisher(w.m, w.pub)
    assert w.m.conn.execute("SELECT count(*) FROM staging").fetchone()[0] == 0


async def test_staged_version_with_a_lying_seal_changes_nothing(w, small_spill):
    await w.forged(forged_version(w.pub.path, adds(300, "f"), digest_flip=True))
    await expect_failure(w.m, DigestError, "digest", "version 3")
    # and its staged rows are not left behind (a big version's can be gigabytes)
    assert w.m.conn.execute("SELECT count(*) FROM staging").fetchone()[0] == 0


async def test_leftover_staging_rows_are_cleared(w, small_spill):
    """A sync killed while staging leaves rows the next sync must not trust."""
    fid = w.m.get(NAME).id
    w.m.conn.executemany("INSERT INTO staging VALUES (?,?,?)", [(fid, 327 + i, b"garbage") for i in range(500)])
    w.pub.publish_adds(400, "after-crash")
    await sync(w.m)
    assert_matches_publisher(w.m, w.pub)
    assert w.m.conn.execute("SELECT count(*) FROM staging").fetchone()[0] == 0
