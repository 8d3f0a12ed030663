"""The snapshot format and its index: pure parsing and encoding.

A **snapshot** is the active set of a feed at one version, written as an
immutable file named by its SHA-256 (content-addressed), so any copy of it,
from any server, is the same bytes or is refused. Format (docs/PROTOCOL.md section 11)::

    file   := [zstd frame]( header || record* )
    header := msgpack map {"v": 1, "origin": str, "size": int, "version": int,
                           "count": int, "bundle": bin}
    record := msgpack array [type: str, hash: bin, case: str, labels: [str]]

Served as ``snapshot/<sha256>`` (the file as written, the name its SHA-256)
and ``snapshot/<sha256>.msgpack`` (its msgpack stream, decompressed: for a
client without zstd). The reader bounds the decompressed stream to the
header (at most ``MAX_HEADER_BYTES``) plus ``count`` records of at most
``MAX_RECORD_BYTES``, and checks each record is *well-formed* (the shape an
LtHash element needs); whether the records are the active set is proved by
the seal's count and digest.

``size`` is the tree size just after the seal of ``version``; ``bundle`` is
the log's last entry bundle at that size (tlog-tiles bytes, 1..256 entries,
the last one being that seal), so a mirror can check the seal by inclusion
proof even after the bundle itself was pruned. Records are sorted strictly
by ``(type, hash, case)`` as bytes: SQLite's primary-key order, and the
strictness makes the record list a set (LtHash would otherwise count a
duplicate twice).

Nothing in a snapshot is trusted: ``sync.bootstrap`` verifies it against the
signed log (seal inclusion, state digest and count). The **index** that lists
snapshots is an unsigned hint for the same reason. Writing snapshots and
pruning are ``store.snapshots``; serving them, ``net.snapshots``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import msgpack

from federation.core.bounded import check_int, json_loads
from federation.core.errors import MalformedError
from federation.core.layout import TILE_WIDTH

SNAPSHOT_VERSION = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The header holds one bundle (at most 256 * (2 + 4096) = 1,049,088 bytes, docs/PROTOCOL.md
# section 2) and an origin (under 64 KiB, the note limit): 2 MiB bounds it with room.
MAX_HEADER_BYTES = 2 << 20
MAX_INDEX_BYTES = 1 << 20
# A valid record is at most 3,922 bytes of msgpack in the smallest forms (a
# 3,300-byte vpdq segment, a 64-character case and 16 labels of 32 characters),
# and under 4,000 in the largest (str32/bin32/array32 headers): 4,096 bounds any
# encoding (tests/storage pins it against the largest record).
MAX_RECORD_BYTES = 4096
# Well-formed records (docs/PROTOCOL.md section 11): what the LtHash element
# encoding (u8 lengths; u16 for a vpdq hash) can hold.
MAX_ELEMENT_FIELD = 255


def max_snapshot_bytes(size: int) -> int:
    """The most bytes a snapshot of a tree of ``size`` entries can take, as
    written (compressed or not): its header and one record per entry at
    most (an active set never holds more records than the log has entries),
    plus zstd's worst case for data it cannot compress (a frame is at most
    1/128 longer than its content, plus a few bytes). A mirror reads no more
    of a download: the bound comes from the signed tree, not from the
    unsigned index."""
    raw = MAX_HEADER_BYTES + size * MAX_RECORD_BYTES
    return raw + raw // 128 + (64 << 10)


@dataclass(frozen=True)
class SnapshotRef:
    """One index entry. Unauthenticated: a hint for which file to fetch."""

    sha256: str
    version: int
    size: int
    count: int
    bytes: int
    compressed: bool


@dataclass(frozen=True)
class SnapshotHeader:
    origin: str
    size: int
    version: int
    count: int
    bundle: bytes


def bundle_range(size: int) -> tuple[int, int]:
    """(index, width) of the last entry bundle of a tree of ``size`` > 0."""
    index = (size - 1) // TILE_WIDTH
    return index, size - index * TILE_WIDTH


def relay_minimum_index(base_size: int) -> int:
    """A mirror bootstrapped at ``base_size`` holds the bundle ending there and
    none before it: bundles ending at or below this index are gone."""
    return bundle_range(base_size)[0] * TILE_WIDTH if base_size > 0 else 0


def encode_index(refs: list[SnapshotRef], minimum_index: int) -> bytes:
    body = {"snapshots": [asdict(r) for r in refs], "minimum_index": minimum_index}
    return json.dumps(body, sort_keys=True).encode() + b"\n"


def parse_index(data: bytes) -> tuple[list[SnapshotRef], int]:
    """Parse a snapshot index; raises ``MalformedError``. Sorted by size.

    Bounded before parsing (``bounded.json_loads``: size, depth, integers
    that fit SQLite, no ``1e400``/``NaN``); every number must be a JSON
    integer >= 0 and ``compressed`` a JSON boolean (what ``encode_index``
    writes), so nothing is coerced.
    """
    body = json_loads(data, "snapshot index", max_bytes=MAX_INDEX_BYTES)
    if not isinstance(body, dict) or not isinstance(body.get("snapshots"), list):
        raise MalformedError("snapshot index: want a JSON object with a 'snapshots' list")
    refs = []
    for i, r in enumerate(body["snapshots"]):
        where = f"snapshot index entry {i}"
        if not isinstance(r, dict):
            raise MalformedError(f"{where}: not a JSON object")
        sha = r.get("sha256")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise MalformedError(f"{where}: bad sha256 {str(sha)[:80]!r}")
        nums = [check_int(r.get(k), f"{where}: {k}", 0, error=MalformedError)
                for k in ("version", "size", "count", "bytes")]
        if type(r.get("compressed")) is not bool:
            raise MalformedError(f"{where}: compressed must be true or false")
        refs.append(SnapshotRef(sha, *nums, r["compressed"]))
    minimum = check_int(body.get("minimum_index", 0), "snapshot index: minimum_index", 0, error=MalformedError)
    return sorted(refs, key=lambda r: r.size), minimum


class _Budget:
    """A read-only file object that refuses to hand out more than ``limit``
    bytes in total: the decompressed size a snapshot may have. The check runs
    after each read, so at most one ``read_size`` chunk beyond the bound is
    ever held (memory stays bounded whatever the compression ratio)."""

    def __init__(self, fileobj, already: int, limit: int, why: str):
        self.fileobj, self.n, self.limit, self.why = fileobj, already, limit, why

    def read(self, size: int) -> bytes:
        chunk = self.fileobj.read(size)
        self.n += len(chunk)
        if self.n > self.limit:
            raise MalformedError(f"snapshot is larger decompressed than the {self.limit} bytes {self.why}")
        return chunk


class SnapshotReader:
    """Streams a snapshot file: header first, then records in batches.

    Pure apart from reading the file object it is given. Raises
    ``MalformedError`` for anything that does not parse, is out of order or
    out of range; it does not judge whether the content is *true* (that is
    ``bootstrap``'s job, against the signed log).

    Bounded: before the header is read, at most ``MAX_HEADER_BYTES`` plus
    one read; after it, the header's size plus ``count`` records of at most
    ``MAX_RECORD_BYTES`` each (``bootstrap`` checks the header's count
    against the signed seal before it reads any record). A zstd
    decompression bomb therefore fails as ``malformed`` at that bound, having
    held no more than one ``read_size`` chunk and one record at a time.
    """

    def __init__(self, fileobj, read_size: int = 1 << 20):
        head = fileobj.read(4)
        if head == ZSTD_MAGIC:
            import zstandard
            fileobj.seek(0)
            # RFC 8878: the stream is what the frames decompress to, one after the other.
            fileobj = zstandard.ZstdDecompressor().stream_reader(fileobj, read_size=read_size,
                                                                 read_across_frames=True)
            head = b""
        self._file = _Budget(fileobj, len(head), MAX_HEADER_BYTES + read_size,
                             "a snapshot header may take")
        self._read_size = read_size
        # Complete objects are consumed before the next chunk is fed, so the
        # buffer holds at most one partial object (<= the header) and a chunk.
        self._unpacker = msgpack.Unpacker(raw=False, use_list=True,
                                          max_buffer_size=MAX_HEADER_BYTES + 2 * read_size + (64 << 10),
                                          max_bin_len=MAX_HEADER_BYTES, max_str_len=4096,
                                          max_array_len=MAX_ELEMENT_FIELD, max_map_len=16)
        if head:
            self._unpacker.feed(head)
        self.header = self._read_header()
        header_bytes = self._unpacker.tell()
        if header_bytes > MAX_HEADER_BYTES:
            raise MalformedError(f"snapshot header is {header_bytes} bytes, over {MAX_HEADER_BYTES}")
        self._file.limit = header_bytes + self.header.count * MAX_RECORD_BYTES
        self._file.why = (f"its header allows ({self.header.count} records of at most {MAX_RECORD_BYTES} bytes "
                          "after the header)")

    def _objects(self) -> Iterator:
        try:
            while True:
                for obj in self._unpacker:
                    yield obj
                chunk = self._file.read(self._read_size)
                if not chunk:
                    return
                self._unpacker.feed(chunk)
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as e:
            raise MalformedError(f"snapshot is not valid msgpack: {e}") from None
        except MalformedError:
            raise
        except Exception as e:  # zstandard.ZstdError has no stable import path across versions
            if type(e).__name__ == "ZstdError":
                raise MalformedError(f"snapshot is not valid zstd: {e}") from None
            raise

    def _read_header(self) -> SnapshotHeader:
        self._objects_it = self._objects()
        h = next(self._objects_it, None)
        keys = ["v", "origin", "size", "version", "count", "bundle"]
        if not isinstance(h, dict) or list(h) != keys:
            raise MalformedError(f"snapshot header must be a map with keys {keys}")
        if h["v"] != SNAPSHOT_VERSION:
            raise MalformedError(f"unsupported snapshot version {h['v']!r}")
        for k in ("size", "version", "count"):
            if type(h[k]) is not int or h[k] < 0:
                raise MalformedError(f"snapshot header {k} {h[k]!r} is not a non-negative integer")
        if h["size"] < 1 or h["version"] < 1:
            raise MalformedError("snapshot header: size and version must be at least 1")
        if type(h["origin"]) is not str or type(h["bundle"]) is not bytes:
            raise MalformedError("snapshot header: origin must be str and bundle bin")
        return SnapshotHeader(h["origin"], h["size"], h["version"], h["count"], h["bundle"])

    def records(self, batch: int = 8192) -> Iterator[list[tuple[str, bytes, str, tuple[str, ...]]]]:
        """Yield batches of records ``(type, hash, case, labels)``, checking
        shape and strict ascending key order. At most ``header.count`` records
        are read; more or fewer is ``MalformedError``."""
        if self._file.n > self._file.limit:  # the read that completed the header went past it
            raise MalformedError(f"snapshot is larger decompressed than the {self._file.limit} bytes "
                                 f"{self._file.why}")
        out: list = []
        prev: tuple | None = None
        n = 0
        limit = self.header.count
        for rec in self._objects_it:
            # Cheap shape checks only: whether each record is a valid, active
            # record is proved by the state digest, not by re-running entry
            # validation on millions of rows.
            if type(rec) is not list or len(rec) != 4:
                raise MalformedError(f"snapshot record {n} is not a 4-element array")
            t, v, c, labels = rec
            if type(t) is not str or type(v) is not bytes or type(c) is not str or type(labels) is not list \
                    or not all(type(label) is str for label in labels):
                raise MalformedError(f"snapshot record {n} has wrong field types")
            # (A field over MAX_ELEMENT_FIELD bytes fails in entries.element(), still as malformed.)
            key = (t, v, c)
            if prev is not None and not prev < key:
                raise MalformedError(f"snapshot record {n} is not after record {n - 1} in key order")
            prev = key
            n += 1
            if n > limit:
                raise MalformedError(f"snapshot holds more than the {limit} records its header states")
            out.append((t, v, c, tuple(labels)))
            if len(out) == batch:
                yield out
                out = []
        if out:
            yield out
        if n != limit:
            raise MalformedError(f"snapshot holds {n} records, its header states {limit}")
