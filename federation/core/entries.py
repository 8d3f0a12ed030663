"""Log entries: ``add``, ``withdraw`` and ``seal``, encoded as msgpack. Pure.

Every entry is a msgpack map whose keys appear in exactly the order listed in
docs/PROTOCOL.md, with the shortest encodings msgpack allows. ``decode``
re-encodes what it parsed and rejects the entry unless the bytes are
identical, so one logical entry has exactly one byte string (and one leaf
hash). Unknown keys, missing keys, wrong types, unknown versions and
out-of-range values are all ``MalformedError``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import msgpack

from federation.core.errors import MalformedError
from federation.core.lthash import DIGEST_BYTES

ENTRY_VERSION = 1

# Hash types and their raw lengths in bytes.
HASH_LENGTHS = {"md5": 16, "sha1": 20, "sha256": 32, "pdq": 32, "photodna": 144}

WITHDRAW_REASONS = ("submitter_request", "hash_error", "legal", "duplicate", "other")

# Checked with fullmatch: "case-1\n" must not pass, as it would with "$"
# (docs/PROTOCOL.md states these as full-string patterns).
CASE_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
LABEL_RE = re.compile(r"[a-z0-9._:-]{1,32}")
MAX_LABELS = 16
MAX_TIME = 1 << 40


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
    ``lthash_worker`` processes)."""
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
    if not (type(hash_type) is str and hash_type in HASH_LENGTHS):
        raise MalformedError(f"unknown hash type {hash_type!r}")
    if type(value) is not bytes:
        raise MalformedError("hash value must be bytes")
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
        _check(type(entry.version) is int and entry.version >= 1, f"seal version {entry.version!r} must be >= 1")
        _check(type(entry.count) is int and entry.count >= 0, f"seal count {entry.count!r} must be >= 0")
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


_KEYS = {
    "add": ["v", "op", "type", "hash", "case", "labels", "time"],
    "withdraw": None,  # checked structurally below
    "seal": ["v", "op", "version", "time", "count", "digest"],
}


def decode(data: bytes) -> Entry:
    """Parse and strictly validate one entry."""
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                            max_bin_len=4096, max_str_len=4096, max_array_len=64, max_map_len=16)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as e:
        raise MalformedError(f"entry is not valid msgpack: {e}") from e
    _check(isinstance(m, dict), "entry is not a msgpack map")
    _check(m.get("v") == ENTRY_VERSION and type(m.get("v")) is int, f"unsupported entry version {m.get('v')!r}")
    try:
        entry = _from_map(m)
        validate(entry)
        canonical = msgpack.packb(_to_map(entry), use_bin_type=True)  # encode() without validating twice
    except (TypeError, ValueError, KeyError) as e:  # e.g. a list where a string belongs
        raise MalformedError(f"entry has a field of the wrong type: {e}") from None
    _check(canonical == data, "entry is not in canonical encoding")
    return entry


def _from_map(m: dict) -> Entry:
    op = m.get("op")
    if op == "add":
        _check(list(m) == _KEYS["add"], f"add entry keys {list(m)} != {_KEYS['add']}")
        return Add(m["type"], m["hash"], m["case"], tuple(m["labels"]) if isinstance(m["labels"], list) else m["labels"], m["time"])
    elif op == "withdraw":
        keys = list(m)
        allowed = [["v", "op", "type", "hash", "reason", "time"],
                   ["v", "op", "type", "hash", "case", "reason", "time"],
                   ["v", "op", "case", "reason", "time"]]
        _check(keys in allowed, f"withdraw entry keys {keys} are not one of the allowed forms")
        return Withdraw(m["reason"], m["time"], m.get("type"), m.get("hash"), m.get("case"))
    elif op == "seal":
        _check(list(m) == _KEYS["seal"], f"seal entry keys {list(m)} != {_KEYS['seal']}")
        return Seal(m["version"], m["time"], m["count"], m["digest"])
    raise MalformedError(f"unknown entry op {op!r}")
