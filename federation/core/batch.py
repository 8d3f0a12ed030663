"""Operator input: batches of additions and withdrawals as CSV or JSONL.

Pure: text lines in, validated ``Add``/``Withdraw`` operations out (their
``time`` is 0; the publisher stamps it). Errors name the line number.

Lines may be text or UTF-8 bytes; a leading byte order mark is ignored.
CSV columns (header required): ``op,type,hash,case,labels,reason``.
``labels`` is separated by ``;`` or spaces. JSONL: one object per line with
the same field names, ``labels`` as a list or string.

Hash values are normalised on the way in: md5/sha1/sha256/pdq are hex
(any case; PDQ is 64 hex digits), PhotoDNA is 144 bytes given as 288 hex
digits, base64, or 144 comma-separated integers 0..255.
"""
from __future__ import annotations

import base64
import binascii
import csv
from collections.abc import Iterable, Iterator

from federation.core.bounded import json_loads
from federation.core.entries import HASH_LENGTHS, HASH_TYPES, WITHDRAW_REASONS, Add, Withdraw, validate
from federation.core.errors import InputError, MalformedError
from federation.core.vpdq import MAX_SEGMENT_BYTES, decode_segment, parse_frames, segments

FIELDS = ("op", "type", "hash", "case", "labels", "reason")
# One operation is well under 1 KiB of JSON, but a vpdq video's line carries
# its frames (~80 bytes each): 4 MiB holds a 13-hour video at a frame a second.
MAX_LINE_BYTES = 4 << 20


def is_segment_text(text: str) -> bool:
    """Whether vpdq hash text is one segment in hex rather than a video's frames
    (frames are comma-separated fields, or a JSON list)."""
    text = text.strip()
    return len(text) <= 2 * MAX_SEGMENT_BYTES and "," not in text and not text.startswith("[")


def parse_video(text: str) -> list[bytes]:
    """A vpdq hash given as text to its segment values (docs/PROTOCOL.md
    section 4, "vpdq"): one segment as hex (what the change stream shows), or
    a whole video's frames in vpdq's or python-threatexchange's text form,
    cut into its canonical segments. Raises ``InputError``."""
    text = (text or "").strip()
    if is_segment_text(text):
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InputError(f"vpdq hash {text[:80]!r} is neither a segment in hex nor a video's frames") from None
        try:
            decode_segment(raw)
        except MalformedError as e:
            raise InputError(str(e)) from None
        return [raw]
    return segments(parse_frames(text))


def parse_hash(hash_type: str, text: str) -> bytes:
    """Normalise a hash given as text to its raw bytes; raises ``InputError``."""
    hash_type = (hash_type or "").strip().lower()
    if hash_type not in HASH_TYPES:
        raise InputError(f"unknown hash type {hash_type!r} (known: {', '.join(HASH_TYPES)})")
    if hash_type not in HASH_LENGTHS:
        values = parse_video(text)
        if len(values) != 1:
            raise InputError(f"this {hash_type} hash is a video of {len(values)} segments; give one segment")
        return values[0]
    want = HASH_LENGTHS[hash_type]
    text = (text or "").strip()
    raw: bytes | None = None
    if len(text) == 2 * want:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None and hash_type == "photodna":
        if "," in text:
            try:
                ints = [int(x) for x in text.split(",")]
                if all(0 <= i <= 255 for i in ints):
                    raw = bytes(ints)
            except ValueError:
                raw = None
        else:
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raw = None
    if raw is None or len(raw) != want:
        form = f"{2 * want} hex digits" + (", base64 or 144 comma-separated bytes" if hash_type == "photodna" else "")
        raise InputError(f"{hash_type} hash {text[:80]!r} is not {form}")
    return raw


def _labels(value) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parts = value.replace(";", " ").split()
    elif isinstance(value, list) and all(isinstance(x, str) for x in value):
        parts = value
    else:
        raise InputError(f"labels must be a list of strings or a ';'-separated string, got {value!r}")
    return tuple(sorted({p.strip().lower() for p in parts if p.strip()}))


def operations(record: dict) -> list[Add | Withdraw]:
    """One input record to its operations: one, or for a vpdq video one per
    segment (all with the record's case, labels and reason)."""
    hash_type = record.get("type")
    if isinstance(hash_type, str) and hash_type.strip().lower() == "vpdq" and isinstance(record.get("hash"), str):
        return [operation({**record, "hash": value.hex()}) for value in parse_video(record["hash"])]
    return [operation(record)]


def operation(record: dict) -> Add | Withdraw:
    """One input record to an operation; raises ``InputError``."""
    unknown = set(record) - set(FIELDS)
    if unknown:
        raise InputError(f"unknown field(s) {sorted(unknown)}")
    for name in ("op", "type", "hash", "case", "reason"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise InputError(f"{name} must be a string, got {type(record[name]).__name__}")
    op = (record.get("op") or "").strip().lower()
    case = (record.get("case") or "").strip() or None
    try:
        if op == "add":
            if case is None:
                raise InputError("add needs a case id")
            value = parse_hash(record.get("type"), record.get("hash"))
            return validate(Add(record["type"].strip().lower(), value, case, _labels(record.get("labels")), 0))
        if op == "withdraw":
            reason = (record.get("reason") or "").strip().lower()
            if reason not in WITHDRAW_REASONS:
                raise InputError(f"withdraw needs a reason, one of {', '.join(WITHDRAW_REASONS)}")
            if record.get("hash"):
                value = parse_hash(record.get("type"), record.get("hash"))
                return validate(Withdraw(reason, 0, record["type"].strip().lower(), value, case))
            if (record.get("type") or "").strip():
                raise InputError("withdraw names a hash type but no hash (a case withdrawal has neither)")
            if case is None:
                raise InputError("withdraw needs a hash (with its type) or a case id")
            return validate(Withdraw(reason, 0, case=case))
    except MalformedError as e:
        raise InputError(str(e)) from e
    raise InputError(f"op must be 'add' or 'withdraw', got {op!r}")


def decoded_lines(lines: Iterable[str | bytes]) -> Iterator[str]:
    """Lines as text: bytes are decoded as UTF-8 (a leading byte order mark,
    as spreadsheet programs write, is dropped). Undecodable bytes are an
    ``InputError`` naming the line, not a ``UnicodeDecodeError``."""
    n = 0
    it = iter(lines)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except UnicodeDecodeError as e:  # a text file opened as UTF-8 by the caller
            raise InputError(f"line {n + 1}: not UTF-8 ({e.reason})") from None
        n += 1
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"line {n}: not UTF-8 (byte {e.start + 1} of the line)") from None
        if n == 1:
            line = line.removeprefix("\ufeff")
        yield line


def read_csv(lines: Iterable[str | bytes]) -> Iterator[Add | Withdraw]:
    reader = csv.DictReader(decoded_lines(lines))
    try:
        if reader.fieldnames is None or not {"op"} <= set(reader.fieldnames):
            raise InputError("CSV needs a header line with at least: op,type,hash,case,labels,reason")
        for row in reader:
            try:
                if any(row.get(None) or ()):
                    raise InputError("more fields than the header has columns (quote a field holding a comma)")
                yield from operations({k: v for k, v in row.items() if k is not None and v not in (None, "")})
            except InputError as e:
                raise InputError(f"line {reader.line_num}: {e}") from None
    except csv.Error as e:
        raise InputError(f"line {reader.line_num}: invalid CSV: {e}") from None


def read_jsonl(lines: Iterable[str | bytes]) -> Iterator[Add | Withdraw]:
    for n, line in enumerate(decoded_lines(lines), 1):
        if not line.strip():
            continue
        try:
            # Bounded before parsing: depth, integer length, no 1e400/NaN.
            record = json_loads(line, "invalid JSON", max_bytes=MAX_LINE_BYTES, error=InputError)
            if not isinstance(record, dict):
                raise InputError("each line must be a JSON object")
            yield from operations(record)
        except InputError as e:
            raise InputError(f"line {n}: {e}") from None


def read_batch(lines: Iterable[str], fmt: str) -> Iterator[Add | Withdraw]:
    if fmt == "csv":
        return read_csv(lines)
    if fmt == "jsonl":
        return read_jsonl(lines)
    raise InputError(f"unknown batch format {fmt!r}; use csv or jsonl")
