"""Log entries: ``add``, ``withdraw`` and ``seal``, encoded as msgpack. Pure.

Every entry is a msgpack map whose keys appear in exactly the order listed in
docs/PROTOCOL.md section 4, each field in the one msgpack form that section
allows (the smallest of its family: fixstr/str8, bin8/bin16, positive
fixint/uint8/16/32/64, fixarray/array16, fixmap). ``decode`` is a strict
reader of that grammar, byte by byte: it does not re-encode with a library
and compare, so what it accepts is exactly what the document says, and one
logical entry has exactly one byte string (and one leaf hash). ``encode``
writes with msgpack-python, whose output is that grammar (tests pin both
against each other). Anything else -- another form, another key order, an
unknown key or ``v``, a value out of range -- is ``MalformedError``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import msgpack

from federation.core.errors import MalformedError
from federation.core.lthash import DIGEST_BYTES
from federation.core.vpdq import decode_segment

ENTRY_VERSION = 1

# Hash types and their raw lengths in bytes.
HASH_LENGTHS = {"md5": 16, "sha1": 20, "sha256": 32, "pdq": 32, "photodna": 144}
# Every hash type: the fixed-length ones, and vpdq, a segment of a video's
# frames (20 + 41 x 1..80 bytes, core/vpdq.py).
VIDEO_TYPES = ("vpdq",)
HASH_TYPES = (*HASH_LENGTHS, *VIDEO_TYPES)

WITHDRAW_REASONS = ("submitter_request", "hash_error", "legal", "duplicate", "other")

# Checked with fullmatch: "case-1\n" must not pass, as it would with "$"
# (docs/PROTOCOL.md states these as full-string patterns).
CASE_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
LABEL_RE = re.compile(r"[a-z0-9._:-]{1,32}")
MAX_LABELS = 16
MAX_TIME = 1 << 40
# Seal version and count: what SQLite's INTEGER holds (docs/PROTOCOL.md section 4).
MAX_COUNTER = (1 << 63) - 1
# An entry is at most this long (a bundle's u16 length prefix could say more).
MAX_ENTRY_BYTES = 4096


@dataclass(frozen=True)
class Add:
    hash_type: str
    value: bytes
    case: str
    labels: tuple[str, ...]
    time: int

    op = "add"

    @property
    def key(self) -> tuple[str, bytes, str]:
        return (self.hash_type, self.value, self.case)


@dataclass(frozen=True)
class Withdraw:
    """Withdraw by hash (``hash_type`` + ``value``, optionally limited to one
    ``case``) or by whole case (``case`` only)."""

    reason: str
    time: int
    hash_type: str | None = None
    value: bytes | None = None
    case: str | None = None

    op = "withdraw"

    @property
    def by_case(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class Seal:
    version: int
    time: int
    count: int
    digest: bytes

    op = "seal"


Entry = Add | Withdraw | Seal


def element(hash_type: str, value: bytes, case: str, labels: tuple[str, ...]) -> bytes:
    """The LtHash element of one active record (see docs/PROTOCOL.md)."""
    out = bytearray()
    for field in (hash_type.encode(), value, case.encode()):
        if field is value and hash_type in VIDEO_TYPES:
            # A vpdq segment is longer than a u8 can say: its length is a u16
            # (the type before it keeps every element's encoding unambiguous).
            if len(field) > 0xFFFF:
                raise MalformedError(f"{hash_type} hash of {len(field)} bytes does not fit its u16 length")
            out += len(field).to_bytes(2, "big")
        else:
            out.append(len(field))
        out += field
    out.append(len(labels))
    for label in labels:
        b = label.encode()
        out.append(len(b))
        out += b
    return bytes(out)


def elements_of(records: list[tuple[str, bytes, str, tuple[str, ...]]]) -> list[bytes]:
    """Elements of (hash_type, value, case, labels) records (also run by
    ``store.lthash_workers`` processes)."""
    return [element(t, v, c, labels) for t, v, c, labels in records]


def add_element(a: Add) -> bytes:
    return element(a.hash_type, a.value, a.case, a.labels)


# ---- validation shared by encode and decode -------------------------------

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise MalformedError(msg)


# The checks below run for every entry a publisher writes and a mirror reads:
# each message is formatted only when the check fails.

def _check_time(t) -> None:
    if not (type(t) is int and 0 <= t < MAX_TIME):
        raise MalformedError(f"time {t!r} is not a unix time in seconds")


def _check_hash(hash_type, value) -> None:
    if not (type(hash_type) is str and hash_type in HASH_TYPES):
        raise MalformedError(f"unknown hash type {hash_type!r}")
    if type(value) is not bytes:
        raise MalformedError("hash value must be bytes")
    if hash_type in VIDEO_TYPES:
        decode_segment(value)  # bounds its length before reading a frame
        return
    if len(value) != HASH_LENGTHS[hash_type]:
        raise MalformedError(f"{hash_type} hash is {len(value)} bytes, want {HASH_LENGTHS[hash_type]}")


def _check_case(case) -> None:
    if not (type(case) is str and CASE_RE.fullmatch(case)):
        raise MalformedError(f"case id {case!r} must match {CASE_RE.pattern}")


def _check_labels(labels) -> None:
    if not (isinstance(labels, (list, tuple)) and len(labels) <= MAX_LABELS):
        raise MalformedError(f"labels must be a list of at most {MAX_LABELS}")
    for label in labels:
        if not (type(label) is str and LABEL_RE.fullmatch(label)):
            raise MalformedError(f"label {label!r} must match {LABEL_RE.pattern}")
    if len(labels) > 1 and list(labels) != sorted(set(labels)):
        raise MalformedError("labels must be sorted and unique")


def validate(entry: Entry) -> Entry:
    if isinstance(entry, Add):
        _check_hash(entry.hash_type, entry.value)
        _check_case(entry.case)
        _check_labels(entry.labels)
        _check_time(entry.time)
    elif isinstance(entry, Withdraw):
        _check(type(entry.reason) is str and entry.reason in WITHDRAW_REASONS, f"unknown withdraw reason {entry.reason!r}")
        _check_time(entry.time)
        if entry.value is None:
            _check(entry.hash_type is None, "withdraw by case must not carry a hash type")
            _check_case(entry.case)
        else:
            _check_hash(entry.hash_type, entry.value)
            if entry.case is not None:
                _check_case(entry.case)
    elif isinstance(entry, Seal):
        _check(type(entry.version) is int and 1 <= entry.version <= MAX_COUNTER,
               f"seal version {entry.version!r} must be in 1..2**63-1")
        _check(type(entry.count) is int and 0 <= entry.count <= MAX_COUNTER,
               f"seal count {entry.count!r} must be in 0..2**63-1")
        _check(type(entry.digest) is bytes and len(entry.digest) == DIGEST_BYTES, "seal digest must be 2048 bytes")
        _check_time(entry.time)
    else:
        raise MalformedError(f"not an entry: {type(entry).__name__}")
    return entry


# ---- encoding ---------------------------------------------------------------

def _to_map(entry: Entry) -> dict:
    if isinstance(entry, Add):
        return {"v": ENTRY_VERSION, "op": "add", "type": entry.hash_type, "hash": entry.value,
                "case": entry.case, "labels": list(entry.labels), "time": entry.time}
    if isinstance(entry, Withdraw):
        m: dict = {"v": ENTRY_VERSION, "op": "withdraw"}
        if entry.value is not None:
            m["type"] = entry.hash_type
            m["hash"] = entry.value
        if entry.case is not None:
            m["case"] = entry.case
        m["reason"] = entry.reason
        m["time"] = entry.time
        return m
    return {"v": ENTRY_VERSION, "op": "seal", "version": entry.version, "time": entry.time,
            "count": entry.count, "digest": entry.digest}


def encode(entry: Entry) -> bytes:
    validate(entry)
    return msgpack.packb(_to_map(entry), use_bin_type=True)


# ---- decoding: the grammar of docs/PROTOCOL.md section 4 ---------------------------
#
# Each reader takes (data, pos) and returns (value, new pos); each refuses
# every form but the one the document allows for the field. All strings of an
# entry are at most 64 bytes, so str16/str32 never occur; a hash is at most
# 144 bytes (bin8) but a vpdq segment up to 3,300 (bin16), and a digest 2,048 (bin16); a map has at most 7 keys
# (fixmap) and labels at most 16 items (fixarray, or array16 for exactly 16).

def _byte(data: bytes, pos: int, what: str) -> int:
    try:
        return data[pos]
    except IndexError:
        raise MalformedError(f"entry ends before {what} (byte {pos})") from None


def _raw(data: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    end = pos + n
    if end > len(data):
        raise MalformedError(f"entry ends inside {what} (needs {n} bytes at byte {pos})")
    return data[pos:end], end


# (format byte, payload bytes, smallest value that needs this form)
_UINT_FORMS = {0xcc: (1, 0x80), 0xcd: (2, 0x100), 0xce: (4, 0x10000), 0xcf: (8, 1 << 32)}


def _uint(data: bytes, pos: int, what: str, lo: int, hi: int) -> tuple[int, int]:
    """positive fixint 0x00-0x7f, or uint8/16/32/64, each only for values the
    form before it cannot hold; then ``lo <= value <= hi``."""
    b = _byte(data, pos, what)
    if b <= 0x7f:
        value, pos = b, pos + 1
    elif b in _UINT_FORMS:
        n, least = _UINT_FORMS[b]
        raw, pos = _raw(data, pos + 1, n, what)
        value = int.from_bytes(raw, "big")
        if value < least:
            raise MalformedError(f"{what} {value} is not in its shortest form (format byte 0x{b:02x})")
    else:
        raise MalformedError(f"{what} is not an unsigned integer in an allowed form (format byte 0x{b:02x})")
    if not lo <= value <= hi:
        raise MalformedError(f"{what} {value} is out of range {lo}..{hi}")
    return value, pos


def _str(data: bytes, pos: int, what: str) -> tuple[str, int]:
    """fixstr (0..31 bytes) or str8 (32..255 bytes), valid UTF-8."""
    b = _byte(data, pos, what)
    if 0xa0 <= b <= 0xbf:
        n, pos = b & 0x1f, pos + 1
        end = pos + n
        if end <= len(data):  # the common case, inlined (entries are decoded by the million)
            try:
                return data[pos:end].decode("utf-8"), end
            except UnicodeDecodeError:
                raise MalformedError(f"{what} is not valid UTF-8") from None
    elif b == 0xd9:
        n = _byte(data, pos + 1, what)
        pos += 2
        if n < 32:
            raise MalformedError(f"{what} of {n} bytes is str8, want fixstr (its shortest form)")
    elif b in (0xda, 0xdb):
        raise MalformedError(f"{what} is str16/str32 (format byte 0x{b:02x}): no string of an entry needs it")
    else:
        raise MalformedError(f"{what} is not a msgpack str (format byte 0x{b:02x})")
    raw, pos = _raw(data, pos, n, what)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise MalformedError(f"{what} is not valid UTF-8") from None


def _bin(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """bin8 (0..255 bytes) or bin16 (256..65535 bytes)."""
    b = _byte(data, pos, what)
    if b == 0xc4:
        n = _byte(data, pos + 1, what)
        pos += 2
    elif b == 0xc5:
        raw, pos = _raw(data, pos + 1, 2, what)
        n = int.from_bytes(raw, "big")
        if n < 256:
            raise MalformedError(f"{what} of {n} bytes is bin16, want bin8 (its shortest form)")
    elif b == 0xc6:
        raise MalformedError(f"{what} is bin32: no binary of an entry needs it")
    else:
        raise MalformedError(f"{what} is not a msgpack bin (format byte 0x{b:02x})")
    return _raw(data, pos, n, what)


def _labels(data: bytes, pos: int) -> tuple[tuple[str, ...], int]:
    """fixarray (0..15 items) or array16 (exactly 16) of str."""
    b = _byte(data, pos, "labels")
    if 0x90 <= b <= 0x9f:
        n, pos = b & 0x0f, pos + 1
    elif b == 0xdc:
        raw, pos = _raw(data, pos + 1, 2, "labels")
        n = int.from_bytes(raw, "big")
        if n < 16:
            raise MalformedError(f"labels: array16 for {n} items, want fixarray (its shortest form)")
        if n > MAX_LABELS:
            raise MalformedError(f"labels: {n} items, at most {MAX_LABELS}")
    else:
        raise MalformedError(f"labels is not a fixarray or array16 (format byte 0x{b:02x})")
    out = []
    for i in range(n):
        label, pos = _str(data, pos, f"label {i}")
        out.append(label)
    return tuple(out), pos


_KEY_BYTES = {k: bytes([0xa0 | len(k)]) + k.encode() for k in
              ("v", "op", "type", "hash", "case", "labels", "time", "reason", "version", "count", "digest")}


def _key(data: bytes, pos: int, key: str) -> int:
    """The next key must be ``key``, as a fixstr."""
    want = _KEY_BYTES[key]
    if not data.startswith(want, pos):
        got = data[pos:pos + len(want)]
        raise MalformedError(f"entry key at byte {pos} is {got.hex()}, want {key!r} as fixstr ({want.hex()})")
    return pos + len(want)


def _peek_key(data: bytes, pos: int, key: str) -> bool:
    return data.startswith(_KEY_BYTES[key], pos)


_V1_OP = _KEY_BYTES["v"] + bytes([ENTRY_VERSION]) + _KEY_BYTES["op"]  # what every entry starts with


def decode(data: bytes) -> Entry:
    """Parse and strictly validate one entry (docs/PROTOCOL.md section 4)."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MAX_ENTRY_BYTES:
        raise MalformedError(f"entry is {len(data)} bytes, over {MAX_ENTRY_BYTES}")
    b = _byte(data, 0, "the map header")
    if not 0x80 <= b <= 0x8f:
        raise MalformedError(f"entry is not a msgpack fixmap (format byte 0x{b:02x})")
    n_keys = b & 0x0f
    if data.startswith(_V1_OP, 1):  # fast path for the same checks as below
        pos = 1 + len(_V1_OP)
    else:
        pos = _key(data, 1, "v")
        v, pos = _uint(data, pos, "v", 0, MAX_COUNTER)
        if v != ENTRY_VERSION:
            raise MalformedError(f"unsupported entry version {v}")
        pos = _key(data, pos, "op")
    op, pos = _str(data, pos, "op")
    if op == "add":
        keys = 7
        pos = _key(data, pos, "type")
        hash_type, pos = _str(data, pos, "type")
        pos = _key(data, pos, "hash")
        value, pos = _bin(data, pos, "hash")
        pos = _key(data, pos, "case")
        case, pos = _str(data, pos, "case")
        pos = _key(data, pos, "labels")
        labels, pos = _labels(data, pos)
        pos = _key(data, pos, "time")
        time, pos = _uint(data, pos, "time", 0, MAX_TIME - 1)
        entry: Entry = Add(hash_type, value, case, labels, time)
    elif op == "withdraw":
        hash_type = value = case = None
        keys = 5
        if _peek_key(data, pos, "type"):  # by hash (every case, or one case)
            keys = 6
            pos = _key(data, pos, "type")
            hash_type, pos = _str(data, pos, "type")
            pos = _key(data, pos, "hash")
            value, pos = _bin(data, pos, "hash")
            if _peek_key(data, pos, "case"):
                keys = 7
                pos = _key(data, pos, "case")
                case, pos = _str(data, pos, "case")
        else:  # by case
            pos = _key(data, pos, "case")
            case, pos = _str(data, pos, "case")
        pos = _key(data, pos, "reason")
        reason, pos = _str(data, pos, "reason")
        pos = _key(data, pos, "time")
        time, pos = _uint(data, pos, "time", 0, MAX_TIME - 1)
        entry = Withdraw(reason, time, hash_type, value, case)
    elif op == "seal":
        keys = 6
        pos = _key(data, pos, "version")
        version, pos = _uint(data, pos, "version", 1, MAX_COUNTER)
        pos = _key(data, pos, "time")
        time, pos = _uint(data, pos, "time", 0, MAX_TIME - 1)
        pos = _key(data, pos, "count")
        count, pos = _uint(data, pos, "count", 0, MAX_COUNTER)
        pos = _key(data, pos, "digest")
        digest, pos = _bin(data, pos, "digest")
        entry = Seal(version, time, count, digest)
    else:
        raise MalformedError(f"unknown entry op {op!r}")
    if n_keys != keys:
        raise MalformedError(f"{op} entry map header says {n_keys} keys, this form has {keys}")
    if pos != len(data):
        raise MalformedError(f"{len(data) - pos} bytes after the entry")
    return validate(entry)
