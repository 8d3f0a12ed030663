"""The PDQ index file: a built ``mih.Table`` kept next to the mirror, and the mirror state it was built from.

A rebuild at ten million hashes reads every active PDQ value from SQLite
and sorts eleven bucket tables (bench/README.md); a restart loads this file
instead and then replays the mirror's changes after the recorded cursor.

Layout (integers big-endian)::

    MAGIC (8 bytes) | header length (4) | header (JSON) | values | starts | ids

The header names the body's array lengths, its SHA-256, and the mirror
state the table stands for (``Basis``). ``read`` returns a table only when
the magic, the sizes, the digest and the table's own structure all check;
anything else is a ``StorageError``, and the caller rebuilds: a damaged or
foreign file is never searched (a wrong offset would make ``np.take`` read
out of range, a wrong value would hide a match).

Whether the file belongs to *this* mirror is the caller's check
(``PdqIndex``): the basis is compared with the mirror, not trusted.

Crash order: the file is written to a temporary name, flushed, fsynced and
renamed over the old one (``os.replace``). A crash leaves the old file or the
new one, never a torn one; a stale temporary file is overwritten next time.
The file holds members-only hashes as the mirror does: mode 0600.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.core.errors import StorageError
from federation.platform import mih

MAGIC = b"FEDPDQI1"
MAX_HEADER = 1 << 20  # a header names a few numbers per followed feed
_HASH_BLOCK = 1 << 24


@dataclass(frozen=True)
class Basis:
    """The mirror state a table was built from: the change stream up to
    ``cursor`` (with the fingerprint of row ``cursor``) and every followed
    feed's origin, applied version and active-set digest."""

    cursor: int
    anchor: str  # hex SHA-256 of change row ``cursor``, "" when cursor is 0
    feeds: dict[int, tuple[str, int, str]]  # follow id -> (origin, version, digest hex)


def index_path(mirror_db: Path | str) -> Path:
    """Where the PDQ index of the mirror at ``mirror_db`` is kept."""
    p = Path(mirror_db)
    return p.with_name(p.name + ".pdq-index")


def write(path: Path | str, table: mih.Table, basis: Basis) -> None:
    """Write ``table`` and its ``basis`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    arrays = (table.values, table.starts, table.ids)
    digest = hashlib.sha256()
    for a in arrays:
        _hash(digest, a)
    header = json.dumps({
        "n": len(table), "bucket_bits": list(table.bucket_bits), "starts": len(table.starts),
        "sha256": digest.hexdigest(), "cursor": basis.cursor, "anchor": basis.anchor,
        "feeds": {str(k): list(v) for k, v in basis.feeds.items()},
    }, sort_keys=True).encode()
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(4, "big") + header)
            for a in arrays:
                f.write(_bytes(a))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(f"cannot write the PDQ index file {path}: {e}") from e


def read(path: Path | str) -> tuple[mih.Table, Basis]:
    """The table and basis in ``path``; ``StorageError`` unless every check passes."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) != 12 or head[:8] != MAGIC:
                raise StorageError(f"{path} is not a PDQ index file")
            hlen = int.from_bytes(head[8:], "big")
            if hlen > MAX_HEADER:  # bounded before it is read or parsed
                raise StorageError(f"{path}: header of {hlen} bytes exceeds {MAX_HEADER}")
            h = _header(path, f.read(hlen))
            n, bits, nstarts = h["n"], tuple(h["bucket_bits"]), h["starts"]
            if (len(bits) != mih.CHUNKS or not all(type(b) is int and 1 <= b <= c for b, c in zip(bits, mih.CHUNK_BITS))
                    or nstarts != sum((1 << b) + 1 for b in bits) or not 0 <= n <= mih.MAX_VALUES):
                raise StorageError(f"{path}: inconsistent table shape")
            if size != 12 + hlen + n * mih.BYTES + 4 * nstarts + 4 * mih.CHUNKS * n:
                raise StorageError(f"{path}: {size} bytes, not what its header describes (truncated?)")
            values = np.fromfile(f, dtype=np.uint8, count=n * mih.BYTES).reshape(n, mih.BYTES)
            starts = np.fromfile(f, dtype=np.uint32, count=nstarts)
            ids = np.fromfile(f, dtype=np.uint32, count=mih.CHUNKS * n)
    except OSError as e:
        raise StorageError(f"cannot read the PDQ index file {path}: {e}") from e
    digest = hashlib.sha256()
    for a in (values, starts, ids):
        _hash(digest, a)
    if digest.hexdigest() != h["sha256"]:
        raise StorageError(f"{path}: body digest does not match its header (damaged)")
    _check_structure(path, n, bits, starts, ids)
    feeds = {int(k): (v[0], v[1], v[2]) for k, v in h["feeds"].items()}
    return mih.Table(values, bits, starts, ids), Basis(h["cursor"], h["anchor"], feeds)


def _bytes(a: np.ndarray) -> memoryview:
    """The bytes of ``a`` without a copy (empty arrays too)."""
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _hash(digest, a: np.ndarray) -> None:
    flat = _bytes(a)
    for i in range(0, len(flat), _HASH_BLOCK):
        digest.update(flat[i:i + _HASH_BLOCK])


def _header(path: Path, raw: bytes) -> dict:
    try:
        h = json.loads(raw)
        ok = (isinstance(h, dict)
              and all(type(h.get(k)) is int and 0 <= h[k] < 1 << 63 for k in ("n", "starts", "cursor"))
              and isinstance(h.get("bucket_bits"), list) and isinstance(h.get("sha256"), str)
              and isinstance(h.get("anchor"), str) and isinstance(h.get("feeds"), dict)
              and all(k.isascii() and k.isdigit() and len(k) < 19 and isinstance(v, list) and len(v) == 3
                      and isinstance(v[0], str) and type(v[1]) is int and isinstance(v[2], str)
                      for k, v in h["feeds"].items()))
    except (ValueError, RecursionError) as e:  # json's errors (and UnicodeDecodeError) are ValueErrors
        raise StorageError(f"{path}: unreadable header: {e}") from e
    if not ok:
        raise StorageError(f"{path}: header lacks a field or has one of the wrong type")
    return h


def _check_structure(path: Path, n: int, bits: tuple[int, ...], starts: np.ndarray, ids: np.ndarray) -> None:
    """Every offset within ``ids`` and non-decreasing, each chunk's run of
    ``n`` ids, every id a value number: so no search can read out of range."""
    at = 0
    for c, b in enumerate(bits):
        s = starts[at:at + (1 << b) + 1]
        if s[0] != c * n or s[-1] != (c + 1) * n or (len(s) > 1 and bool((np.diff(s.astype(np.int64)) < 0).any())):
            raise StorageError(f"{path}: bucket offsets of chunk {c} are not a partition of its ids")
        at += (1 << b) + 1
    if n and int(ids.max()) >= n:
        raise StorageError(f"{path}: an id is not a value number")
