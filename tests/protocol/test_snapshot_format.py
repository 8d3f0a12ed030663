"""docs/PROTOCOL.md section 11, rule by rule: the snapshot stream's bounds, well-formed
records, their order, and the uncompressed form for clients without zstd.

Readers are exercised on hand-built streams (pure); the ``.msgpack`` resource on
a real server on loopback and in a static export.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import sys

import aiohttp
import msgpack
import pytest
import zstandard

from federation.core import entries as E
from federation.core.errors import MalformedError
from federation.core.lthash import LtHash16
from federation.core.snapshot_format import MAX_HEADER_BYTES, MAX_RECORD_BYTES, SnapshotReader, parse_index
from federation.net.export import export_feed
from federation.net.server import PublisherSource, create_app
from federation.net.snapshots import server_extension
from federation.store.snapshots import snapshot_dir, write_snapshot

from support.feeds import NAME, adds, feed_url

PACK = msgpack.Packer(use_bin_type=True)


def header(count: int, bundle: bytes = b"", origin: str = "o") -> bytes:
    return PACK.pack({"v": 1, "origin": origin, "size": 1, "version": 1, "count": count, "bundle": bundle})


def read_all(stream: bytes, read_size: int = 1 << 16) -> list:
    reader = SnapshotReader(io.BytesIO(stream), read_size=read_size)
    return [r for batch in reader.records(batch=7) for r in batch]


# ---- the decompressed-size bound: header + count x 1,024 ---------------------------------

def record_of_exactly(n: int, i: int) -> bytes:
    """A shape-valid record whose msgpack encoding is exactly ``n`` bytes."""
    for pad in range(n):
        rec = PACK.pack(["md5", i.to_bytes(16, "big"), "c" * pad, []])
        if len(rec) == n:
            return rec
    raise AssertionError(n)


@pytest.mark.parametrize("compress", [False, True])
def test_the_stream_may_be_exactly_header_plus_count_times_1024_bytes_and_no_more(compress):
    count = 40
    head = header(count)
    body = b"".join(record_of_exactly(MAX_RECORD_BYTES, i) for i in range(count - 1))
    # The last record takes up exactly what is left: the stream is at the bound.
    exact = head + body + record_of_exactly(MAX_RECORD_BYTES, count - 1)
    over = head + body + record_of_exactly(MAX_RECORD_BYTES + 1, count - 1)
    assert len(exact) == len(head) + count * MAX_RECORD_BYTES
    wrap = (lambda b: zstandard.ZstdCompressor().compress(b)) if compress else (lambda b: b)
    assert len(read_all(wrap(exact), read_size=4096)) == count
    with pytest.raises(MalformedError, match="larger decompressed than"):
        read_all(wrap(over), read_size=4096)


def test_a_snapshot_whose_bundle_is_the_largest_a_bundle_may_be_is_readable():
    """256 entries of 4,096 bytes: 1,049,088 bytes, more than the 1 MiB the header was once held to."""
    bundle = b"".join(len(e).to_bytes(2, "big") + e for e in [b"\x00" * 4096] * 256)
    assert len(bundle) == 1_049_088
    reader = SnapshotReader(io.BytesIO(header(0, bundle)))
    assert reader.header.bundle == bundle and list(reader.records()) == []


def test_a_header_over_2_mib_is_malformed():
    ok = header(0, b"\x00" * (MAX_HEADER_BYTES - 200))
    assert len(ok) <= MAX_HEADER_BYTES
    assert SnapshotReader(io.BytesIO(ok)).header.count == 0
    big = header(0, b"\x00" * MAX_HEADER_BYTES)
    with pytest.raises(MalformedError):
        SnapshotReader(io.BytesIO(big))


# ---- well-formed records (malformed) vs records that are not active records (digest) ---------

def rec(t="md5", h=bytes(16), c="c", labels=()):
    return PACK.pack([t, h, c, list(labels)])


@pytest.mark.parametrize("record, words", [
    (PACK.pack(["md5", bytes(16), "c"]), "4-element array"),
    (PACK.pack(["md5", bytes(16), "c", [], 1]), "4-element array"),
    (PACK.pack({"md5": 1}), "4-element array"),
    (PACK.pack([b"md5", bytes(16), "c", []]), "wrong field types"),        # bin where a str belongs
    (PACK.pack(["md5", "00" * 16, "c", []]), "wrong field types"),         # str where a bin belongs
    (PACK.pack(["md5", bytes(16), "c", "csam"]), "wrong field types"),      # labels not an array
    (PACK.pack(["md5", bytes(16), "c", ["a", 1]]), "wrong field types"),    # a label not a str
    (PACK.pack(["md5", bytes(16), "c", [b"a"]]), "wrong field types"),      # a label as bin
    (PACK.pack(["md5", bytes(16), "c", ["a"] * 256]), "not valid msgpack"),  # more than 255 labels
    (b"\x94\xa3md5\xc4\x10" + bytes(16) + b"\xa2\xff\xfe\x90", "not valid msgpack"),  # case not UTF-8
])
def test_records_that_are_not_well_formed_are_malformed(record, words):
    with pytest.raises(MalformedError, match=words):
        read_all(header(1) + record)


@pytest.mark.parametrize("record", [
    rec(t="crc32"),                            # unknown type
    rec(h=bytes(15)),                          # wrong length for md5
    rec(c="has space"),                        # not a case id
    rec(labels=("b", "a")),                    # labels out of order
    rec(labels=("UPPER",)),
    rec(labels=("a",) * 255),                  # 255 labels (and more than 16): still an element
])
def test_well_formed_records_are_not_judged_one_by_one(record):
    """Such a record is read (and then fails the digest check at bootstrap:
    tests/mirroring/test_snapshot_bootstrap_and_pruning.py), not refused as malformed on its own."""
    assert len(read_all(header(1) + record)) == 1


def test_fields_too_long_for_an_element_are_malformed():
    """The element encoding (section 6) has u8 lengths: a field over 255 bytes
    cannot be one, which entries.element() reports (bootstrap turns it into
    malformed: tests/mirroring/test_snapshot_bootstrap_and_pruning.py)."""
    for t, h, c, labels in [("md5", bytes(16), "c" * 256, ()), ("md5", bytes(256), "c", ()),
                            ("x" * 256, bytes(16), "c", ()), ("md5", bytes(16), "c", ("l" * 256,))]:
        assert len(read_all(header(1) + rec(t, h, c, labels))) == 1
        with pytest.raises(ValueError):
            E.element(t, h, c, labels)


# ---- order: (type, hash, case), field by field, each as unsigned bytes --------------------

@pytest.mark.parametrize("first, second", [
    (rec(t="pdq", h=b"\xff" * 32), rec(t="photodna", h=bytes(144))),   # by type first
    (rec(h=b"\x7f" + bytes(15)), rec(h=b"\x80" + bytes(15))),           # bytes are unsigned (a signed compare flips it)
    (rec(c="c"), rec(c="c-1")),                                         # a prefix comes first
    (rec(c="C"), rec(c="c")),                                           # bytes, not case-folded
    # field by field: "sha" < "sha1" whatever follows; compared as one concatenation,
    # "sha" || ff.. would sort after "sha1" || 00..
    (rec(t="sha", h=b"\xff" * 16), rec(t="sha1", h=bytes(20))),
])
def test_records_ascend_field_by_field_as_unsigned_bytes(first, second):
    assert len(read_all(header(2) + first + second)) == 2
    with pytest.raises(MalformedError, match="key order"):
        read_all(header(2) + second + first)
    with pytest.raises(MalformedError, match="key order"):
        read_all(header(2) + first + first)  # strictly: no duplicates


# ---- snapshot/<sha256>.msgpack: the stream without zstd --------------------------------------

@pytest.fixture
def published(make_publisher, signer):
    pf = make_publisher("pub.db", signer)
    pf.publish_adds(300, case="c1")
    pf.publish(adds(40, case="c2", labels=("a", "b"), hash_type="sha1"))
    return pf


def _read_without_zstd(data: bytes, monkeypatch) -> list:
    """What a client that has no zstd gets out of ``data``."""
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now fails
    try:
        return read_all(data)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("compress", [True, False])
async def test_msgpack_resource_serves_the_uncompressed_stream(published, serve, compress, monkeypatch):
    ref = write_snapshot(published.path, NAME, compress=compress)
    url = feed_url(await serve(create_app([PublisherSource(published.path)],
                                          extensions=[server_extension(published.path)])))
    async with aiohttp.ClientSession() as s, asyncio.timeout(30):
        async with s.get(url + "snapshot/index") as resp:
            (listed,), _ = parse_index(await resp.read())
        async with s.get(url + f"snapshot/{ref.sha256}") as resp:
            assert resp.status == 200
            as_written = await resp.read()
        async with s.get(url + f"snapshot/{ref.sha256}.msgpack", headers={"Accept-Encoding": "identity"}) as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert "Content-Encoding" not in resp.headers
            stream = await resp.read()
        async with s.head(url + f"snapshot/{ref.sha256}.msgpack") as resp:
            assert resp.status == 200
        for bad in (f"snapshot/{'0' * 64}.msgpack", f"snapshot/{ref.sha256}.zst",
                    f"snapshot/{ref.sha256}.msgpack.msgpack", f"snapshot/{ref.sha256.upper()}.msgpack"):
            async with s.get(url + bad) as resp:
                assert resp.status == 404, bad
    assert listed == ref and listed.compressed == compress
    assert hashlib.sha256(as_written).hexdigest() == ref.sha256
    assert (as_written[:4] == b"\x28\xb5\x2f\xfd") == compress
    assert stream == (zstandard.ZstdDecompressor().decompressobj().decompress(as_written) if compress else as_written)
    # A client without zstd reads it, and what it reads is the active set the seal states.
    records = _read_without_zstd(stream, monkeypatch)
    head = published.head()
    assert len(records) == head.count == ref.count
    assert LtHash16().add(E.elements_of(records)).digest() == head.digest
    if compress:
        with pytest.raises(ModuleNotFoundError):
            _read_without_zstd(as_written, monkeypatch)  # the file as written needs zstd


def test_static_export_holds_the_msgpack_form_too(published, tmp_path):
    ref = write_snapshot(published.path, NAME, compress=True)
    out = tmp_path / "static"
    export_feed(published.path, NAME, out, fsync=False, include_members_only=True)
    written = (snapshot_dir(published.path) / str(published.head().id) / f"{ref.sha256}.snap").read_bytes()
    assert (out / "snapshot" / ref.sha256).read_bytes() == written
    raw = (out / "snapshot" / f"{ref.sha256}.msgpack").read_bytes()
    assert raw == zstandard.ZstdDecompressor().decompressobj().decompress(written)
    assert len(read_all(raw)) == ref.count
    # Incremental: a second export leaves it alone.
    before = (out / "snapshot" / f"{ref.sha256}.msgpack").stat().st_mtime_ns
    export_feed(published.path, NAME, out, fsync=False, include_members_only=True)
    assert (out / "snapshot" / f"{ref.sha256}.msgpack").stat().st_mtime_ns == before


# ---- zstd: the stream is what the frames decompress to -----------------------------------

def test_a_compressed_stream_is_the_concatenation_of_its_frames_and_garbage_is_malformed():
    z = zstandard.ZstdCompressor()
    stream = header(2) + rec(c="a") + rec(c="b")
    two_frames = z.compress(stream[:10]) + z.compress(stream[10:])
    assert [r[2] for r in read_all(two_frames, read_size=7)] == ["a", "b"]
    with pytest.raises(MalformedError, match="not valid zstd"):
        read_all(z.compress(stream) + b"trailing garbage")
