"""Cross-checks against tlog-scales, an independent Python tlog-tiles client.

A feed is published with ``federation.publisher`` (versions crossing 256
and 65,536 entries, so partial tiles exist at levels 0, 1 and 2) and served
by ``federation.server`` on 127.0.0.1. tlog-scales' ``TilesReader`` over
``HttpBackend`` then reads it like any tlog-tiles log: checkpoint and
signature, root hash, every entry, inclusion and consistency proofs. Its
``TilesWriter`` rebuilds the same log from the same entries, and every tile,
bundle and checkpoint it writes must be byte for byte what we serve.

tlog-scales uses blocking ``requests``, so it runs in a worker thread while
the aiohttp server runs on the test's event loop.
"""
from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from tlog_scales import signing as ts_signing, tlog as ts_tlog, utils as ts_utils
from tlog_scales.backend import HttpBackend
from tlog_scales.reader import TilesReader
from tlog_scales.writer import TilesWriter

from federation.core import entries as E
from federation.core.checkpoint import open_checkpoint, parse_checkpoint_body
from federation.core.errors import SignatureError
from federation.core.layout import ENTRIES, TILE_WIDTH, tile_path, tiles_for_size
from federation.core.lthash import digest_of
from federation.core.merkle import consistency_proof, inclusion_proof, leaf_hash, verify_consistency, verify_inclusion
from federation.core.note import Note, Signer, open_note, parse_note, parse_vkey
from federation.core.tiles import TileHashes, needed_tiles, parse_hash_tile
from federation.net.server import PublisherSource, create_app
from federation.store.publisher import Publisher

ORIGIN = "conformance.example/feeds/scales"
NAME = "scales"
SEED = bytes(range(32))
STAMP = 1700000000


def add(i: int, case: str = "case-1", labels: tuple[str, ...] = ("csam",)) -> E.Add:
    return E.Add("md5", i.to_bytes(16, "big"), case, labels, 0)


VERSIONS: list[list[E.Add | E.Withdraw]] = [
    [add(i) for i in range(3)],  # size 4: one partial level-0 tile
    [add(i, f"case-{i % 5}", ("a", "b")) for i in range(3, 300)],  # crosses 256: level-1 partial
    [add(0),  # duplicate: logged, changes nothing
     add(1, labels=("other",)),  # relabel
     add(3, "case-2"),  # the same hash in a second case
     E.Withdraw("hash_error", 0, "md5", (3).to_bytes(16, "big")),  # by hash, every case
     E.Withdraw("duplicate", 0, "md5", (4).to_bytes(16, "big"), "case-4"),  # by hash, one case
     E.Withdraw("submitter_request", 0, case="case-1")],  # by case
    [add(i, "case-7", ("x",)) for i in range(1000, 1202)],  # ends exactly at size 512: no level-0 partial
    [add(i, "case-8") for i in range(2000, 5000)],
    [add(i, "case-9", ()) for i in range(100000, 163000)],  # past 65,536: level-2 partial
]


@dataclass
class Feed:
    path: Path
    signer: Signer
    entries: list[bytes] = field(default_factory=list)  # what the log must hold, encoded independently
    sizes: list[int] = field(default_factory=list)  # tree size after each version
    notes: list[bytes] = field(default_factory=list)  # checkpoint note after each version

    @property
    def size(self) -> int:
        return self.sizes[-1]


def expected_log(versions) -> tuple[list[bytes], list[int]]:
    """The entries the publisher must append, derived from the protocol (docs/PROTOCOL.md
    sections 4-6) rather than from the publisher's code."""
    active: dict[tuple[str, bytes, str], tuple[str, ...]] = {}
    out: list[bytes] = []
    sizes = []
    for v, ops in enumerate(versions, 1):
        stamp = STAMP + v
        for op in ops:
            if isinstance(op, E.Add):
                op = E.Add(op.hash_type, op.value, op.case, op.labels, stamp)
                active[op.key] = op.labels
            else:
                op = E.Withdraw(op.reason, stamp, op.hash_type, op.value, op.case)
                for k in list(active):
                    if (op.by_case and k[2] == op.case) or (
                            not op.by_case and k[:2] == (op.hash_type, op.value) and op.case in (None, k[2])):
                        del active[k]
            out.append(E.encode(op))
        digest = digest_of(E.element(t, h, c, labels) for (t, h, c), labels in active.items())
        out.append(E.encode(E.Seal(v, stamp, len(active), digest)))
        sizes.append(len(out))
    return out, sizes


@pytest.fixture(scope="module")
def feed(tmp_path_factory) -> Feed:
    path = tmp_path_factory.mktemp("scales") / "pub.db"
    signer = Signer.from_seed(ORIGIN, SEED)
    pub = Publisher(path)
    try:
        pub.create_feed(NAME, ORIGIN, signer)
        f = Feed(path, signer)
        f.notes.append(pub.feed(NAME).checkpoint)
        f.sizes.append(0)
        for v, ops in enumerate(VERSIONS, 1):
            pub.publish(NAME, ops, signer, now=STAMP + v)
            head = pub.feed(NAME)
            f.notes.append(head.checkpoint)
            f.sizes.append(head.size)
    finally:
        pub.close()
    f.entries, sizes = expected_log(VERSIONS)
    assert f.sizes[1:] == sizes, "the publisher appended a different number of entries than the protocol says"
    return f


@pytest.fixture
async def base_url(feed):
    """The feed's tlog-tiles prefix, served by federation.server on 127.0.0.1."""
    runner = web.AppRunner(create_app([PublisherSource(feed.path)]), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/feeds/{NAME}"
    await runner.cleanup()


def roots_by_size(feed: Feed) -> dict[int, bytes]:
    return {parse_checkpoint_body(n[: n.index(b"\n\n") + 1]).size: parse_checkpoint_body(n[: n.index(b"\n\n") + 1]).root
            for n in feed.notes}


def sample_indexes(size: int) -> list[int]:
    picks = {0, 1, 2, 3, 255, 256, 257, 511, 512, 4095, 65535, 65536, size // 2, size - 2, size - 1}
    return sorted(i for i in picks if 0 <= i < size)


# ---- checkpoint -----------------------------------------------------------------------

def _check_checkpoint(url: str, feed: Feed) -> None:
    reader = TilesReader(HttpBackend(url))
    cp = reader.get_checkpoint()
    ours = open_checkpoint(feed.notes[-1], ORIGIN, [feed.signer.verifier]).checkpoint
    assert (cp.origin, cp.size, cp.root_hash) == (ours.origin, ours.size, ours.root)
    assert cp.serialize().encode() == feed.notes[-1]

    vkey = ts_signing.Vkey.from_string(feed.signer.vkey)
    assert (vkey.name, vkey.key_id, vkey.sig_type, vkey.pubkey) == (
        feed.signer.name, feed.signer.verifier.key_id, 1, feed.signer.verifier.public_key)
    assert vkey.serialize() == feed.signer.vkey
    # tlog-scales computes the key ID itself when given none.
    assert ts_signing.Vkey(ORIGIN, None, 1, feed.signer.verifier.public_key).key_id == feed.signer.verifier.key_id
    cp.verify(vkey)  # raises on failure

    other = ts_signing.Vkey.from_string(Signer.from_seed(ORIGIN, bytes(32)).vkey)
    with pytest.raises(RuntimeError, match="no signature matched"):
        cp.verify(other)
    forged = ts_tlog.Checkpoint(cp.origin, cp.size, bytes(32), cp.signatures)
    with pytest.raises(InvalidSignature):
        forged.verify(vkey)


async def test_tlog_scales_verifies_our_checkpoint(base_url, feed):
    await asyncio.to_thread(_check_checkpoint, base_url, feed)


def _log_line_only(note: bytes, signer: Signer) -> bytes:
    """``note`` with only the log key's Ed25519 line (our notes also carry the
    log's timestamp line, type 0x04, which tlog-scales does not write)."""
    n = parse_note(note)
    keep = tuple(s for s in n.signatures if s.key_id == signer.verifier.key_id)
    return Note(n.text, keep).to_bytes()


def test_tlog_scales_signs_checkpoints_like_us(feed):
    # Ed25519 is deterministic: the same key signing the same body gives the same note.
    ts_signer = ts_signing.PlainEd25519Signer(ORIGIN, SEED)
    for note in feed.notes:
        cp = parse_checkpoint_body(note[: note.index(b"\n\n") + 1])
        theirs = ts_tlog.Checkpoint.make_signed(cp.origin, cp.size, cp.root, [ts_signer]).serialize().encode()
        assert theirs == _log_line_only(note, feed.signer)
        assert open_checkpoint(theirs, ORIGIN, [parse_vkey(feed.signer.vkey)]).checkpoint == cp


def test_tlog_scales_verifies_the_logs_own_timestamp(feed):
    """The freshness line is a plain c2sp.org/tlog-cosignature (type 0x04) by
    the log's public key: tlog-scales' own cosignature verifier accepts it and
    reads the publish time from it, and its type 0x01 verifier ignores it."""
    pub = feed.signer.verifier.public_key
    twin = ts_signing.Vkey(ORIGIN, None, 4, pub)
    assert twin.key_id == feed.signer.verifier.timestamp_key().key_id != feed.signer.verifier.key_id
    times = []
    for note in feed.notes:
        cp = ts_tlog.Checkpoint.from_text(note.decode())
        found = ts_signing.VkeySet(twin).verify(cp.signatures, cp)
        assert len(found) == 1, "exactly one valid timestamp line by the log key"
        (_, sig), = found
        times.append(ts_signing.Ed25519CosignatureVerifier.get_timestamp(sig.payload))
        only_log = ts_signing.VkeySet(ts_signing.Vkey(ORIGIN, None, 1, pub)).verify(cp.signatures, cp)
        assert len(only_log) == 1
    assert times[1:] == [STAMP + v for v in range(1, len(VERSIONS) + 1)]


# ---- tree and entries ------------------------------------------------------------------

def _check_roots_and_entries(url: str, feed: Feed) -> None:
    reader = TilesReader(HttpBackend(url))
    cp = reader.get_checkpoint()
    assert reader.calculate_root_hash() == cp.root_hash
    # Every older signed tree is still computable from what we serve (older
    # partial tiles included), and has the root we signed then.
    roots = roots_by_size(feed)
    for size in feed.sizes[1:]:
        old = TilesReader(HttpBackend(url))
        old.set_size(size)
        assert old.calculate_root_hash() == roots[size], size
    got = [reader.get_entry(i) for i in range(cp.size)]
    mismatched = [i for i, (a, b) in enumerate(zip(got, feed.entries)) if a != b]
    assert len(got) == len(feed.entries) and mismatched == [], mismatched[:10]
    # The seals tlog-scales read decode to what the protocol says.
    seals = [E.decode(got[s - 1]) for s in feed.sizes[1:]]
    assert [s.version for s in seals] == list(range(1, len(VERSIONS) + 1))


async def test_tlog_scales_reads_our_tree_and_entries(base_url, feed):
    await asyncio.to_thread(_check_roots_and_entries, base_url, feed)


# ---- proofs both ways -----------------------------------------------------------------

def _fetch_tile_hashes(url: str, size: int, compute) -> TileHashes:
    """Our client-side proof path: learn the tiles a computation needs, fetch
    them from the server, run it on a TileHashes."""
    tiles = {}
    with requests.Session() as s:
        for level, index, width in sorted(needed_tiles(size, compute)):
            resp = s.get(f"{url}/{tile_path(level, index, width)}")
            assert resp.status_code == 200, (level, index, width, resp.status_code)
            tiles[(level, index)] = parse_hash_tile(resp.content, width)
    return TileHashes(size, tiles)


def _check_their_proofs_here(url: str, feed: Feed) -> None:
    reader = TilesReader(HttpBackend(url))
    reader.get_checkpoint()
    roots = roots_by_size(feed)
    sizes = feed.sizes[1:]
    for size in sizes:
        for i in sample_indexes(size):
            proof = reader.get_inclusion_proof(i, size)
            leaf = leaf_hash(feed.entries[i])
            assert verify_inclusion(leaf, i, size, proof.node_hashes, roots[size]), (i, size)
            assert not verify_inclusion(leaf_hash(b"x"), i, size, proof.node_hashes, roots[size])
            th = _fetch_tile_hashes(url, size, lambda t, i=i, size=size: inclusion_proof(i, size, t.mth))
            assert inclusion_proof(i, size, th.mth) == proof.node_hashes, (i, size)
    for new in sizes:
        th = None
        for old in (s for s in sizes if s <= new):
            proof = reader.get_consistency_proof(old, new)
            assert verify_consistency(old, new, roots[old], roots[new], proof.node_hashes), (old, new)
            if old < new:
                assert not verify_consistency(old, new, roots[new], roots[new], proof.node_hashes)
            th = _fetch_tile_hashes(url, new, lambda t, old=old, new=new: consistency_proof(old, new, t.mth))
            assert consistency_proof(old, new, th.mth) == proof.node_hashes, (old, new)


async def test_tlog_scales_proofs_verify_here(base_url, feed):
    await asyncio.to_thread(_check_their_proofs_here, base_url, feed)


def _check_our_proofs_there(url: str, feed: Feed) -> None:
    roots = roots_by_size(feed)
    sizes = feed.sizes[1:]
    checked = 0
    for size in sizes:
        for i in sample_indexes(size):
            th = _fetch_tile_hashes(url, size, lambda t, i=i, size=size: inclusion_proof(i, size, t.mth))
            proof = ts_tlog.InclusionProof(i, size, inclusion_proof(i, size, th.mth))
            proof.check(leaf_hash(feed.entries[i]), roots[size])
            with pytest.raises(ts_tlog.InclusionProofInvalid):
                proof.check(leaf_hash(feed.entries[i] + b"x"), roots[size])
            if proof.node_hashes:
                flipped = [bytes([proof.node_hashes[0][0] ^ 1]) + proof.node_hashes[0][1:]] + proof.node_hashes[1:]
                with pytest.raises(ts_tlog.InclusionProofInvalid):
                    ts_tlog.InclusionProof(i, size, flipped).check(leaf_hash(feed.entries[i]), roots[size])
            checked += 1
    for new in sizes:
        for old in (s for s in sizes if 0 < s <= new):
            th = _fetch_tile_hashes(url, new, lambda t, old=old, new=new: consistency_proof(old, new, t.mth))
            proof = ts_tlog.ConsistencyProof(old, new, consistency_proof(old, new, th.mth))
            proof.check(roots[old], roots[new])
            if old < new:
                with pytest.raises(ts_tlog.ConsistencyProofInvalid):
                    proof.check(roots[old], leaf_hash(b"not the root"))
            checked += 1
    # From the empty tree: both sides treat (0, n) with an empty proof as trivially consistent.
    ts_tlog.ConsistencyProof(0, sizes[-1], consistency_proof(0, sizes[-1], lambda s, e: b"")).check(
        roots[0], roots[sizes[-1]])
    assert checked > 50


async def test_our_proofs_verify_in_tlog_scales(base_url, feed):
    await asyncio.to_thread(_check_our_proofs_there, base_url, feed)


# ---- tlog-scales' own writer produces the same bytes -----------------------------------

def _check_against_writer(url: str, feed: Feed, root: Path) -> None:
    writer = TilesWriter.create(root, ORIGIN)
    ts_signer = ts_signing.PlainEd25519Signer(ORIGIN, SEED)
    backend = HttpBackend(url)
    done = 0
    for size, note in zip(feed.sizes[1:], feed.notes[1:]):
        for entry in feed.entries[done:size]:
            writer.add_leaf(entry)
        writer.commit([ts_signer], gc=False)
        done = size
        # The writer's checkpoint for this version is the note we signed for it.
        assert (root / "checkpoint").read_bytes() == _log_line_only(note, feed.signer), size
        # Every tile and bundle a tree of this size exposes is the same on both sides.
        for level, index, width in tiles_for_size(size) + [
                (ENTRIES, i, min(TILE_WIDTH, size - TILE_WIDTH * i)) for i in range((size + 255) // 256)]:
            p = tile_path(level, index, width)
            ours = backend.get(*p.split("/"))
            assert ours is not None, f"we do not serve {p} for size {size}"
            assert (root / p).read_bytes() == ours, f"{p} differs at size {size}"
    # And every file the writer ever wrote (older partials included) is served identically.
    files = [p for p in (root / "tile").rglob("*") if p.is_file()]
    assert len(files) > 500
    for f in files:
        rel = f.relative_to(root).as_posix()
        assert backend.get(*rel.split("/")) == f.read_bytes(), rel


async def test_tlog_scales_writer_builds_identical_tiles(base_url, feed, tmp_path, monkeypatch):
    # The writer fsyncs every file and directory it writes; that proves nothing
    # about the bytes compared here and costs seconds, so write plainly.
    monkeypatch.setattr(ts_utils, "atomic_write", lambda path, data: Path(path).write_bytes(data))
    await asyncio.to_thread(_check_against_writer, base_url, feed, tmp_path / "ts-log")


# ---- cosignatures (c2sp.org/tlog-cosignature, type 0x04) ------------------------------

def test_cosignatures_verify_in_tlog_scales(feed):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from federation.core.note import Cosigner

    cosigner = Cosigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(b"\x09" * 32))
    note = feed.notes[-1]
    text = note[: note.index(b"\n\n") + 1]
    line = cosigner.cosign(text, 1700000123).line()
    vkey = ts_signing.Vkey.from_string(cosigner.vkey)
    assert vkey.sig_type == 4
    assert ts_signing.Vkey(cosigner.name, None, 4, vkey.pubkey).key_id == vkey.key_id == cosigner.verifier.key_id
    cp = ts_tlog.Checkpoint.from_text((note + line).decode())
    cp.verify(vkey)  # tlog-scales' Ed25519CosignatureVerifier
    assert ts_signing.Ed25519CosignatureVerifier.get_timestamp(cp.signatures[-1].payload) == 1700000123
    opened = open_note(note + line, [feed.signer.verifier, cosigner.verifier])
    assert [v.sig_type for v in opened.verified_by] == [1, 4]
    # A cosignature whose timestamp was changed fails on both sides.
    raw = base64.b64decode(line.split(b" ")[2])
    forged_raw = raw[:4] + (1700000124).to_bytes(8, "big") + raw[12:]
    forged = line.split(b" ")[0] + b" " + line.split(b" ")[1] + b" " + base64.b64encode(forged_raw) + b"\n"
    with pytest.raises(InvalidSignature):
        ts_tlog.Checkpoint.from_text((note + forged).decode()).verify(vkey)
    with pytest.raises(SignatureError):
        open_note(note + forged, [feed.signer.verifier, cosigner.verifier])


def test_feed_shape(feed):
    """The feed really exercises what the other tests claim: partial tiles at
    levels 0, 1 and 2, and versions that end on and off tile boundaries."""
    final = tiles_for_size(feed.size)
    assert {level for level, _, width in final if width < 256} == {0, 1, 2}
    assert feed.size > 65536
    assert any(s % 256 for s in feed.sizes[1:])
    assert 512 in feed.sizes and all(w == 256 for level, _, w in tiles_for_size(512) if level == 0)
    widths = {s: [w for _, _, w in tiles_for_size(s) if w < 256] for s in feed.sizes[1:]}
    assert any(len(w) >= 2 for w in widths.values())
    assert base64.b64decode(feed.notes[-1].split(b"\n")[2]) == roots_by_size(feed)[feed.size]
