"""StopNCII hash records (JSON), read as claims, streaming and bounded. Pure.

A hash record, as StopNCII's ``FetchHashes`` answers it (python-threatexchange's
StopNCII client reads the same fields)::

    {"lastModtimestamp": 1700000000, "signalType": "ImagePDQ", "hashValue": "<64 hex>",
     "hashStatus": "Active", "caseNumbers": {"case-1": "Active", "case-2": "Withdrawn"},
     "CSPFeedbacks": [...]}

A record is the *current* state of one hash: a later record of the same
signal and hash replaces an earlier one in the file entirely (newest
``lastModtimestamp`` wins, then the later in the file), so a case the newer
record lists as ``Withdrawn`` / ``Deleted`` is gone, and one it no longer
lists is no longer listed. ``Received`` and ``Active`` cases are active; a
``hashStatus`` of ``Withdrawn`` or ``Deleted`` makes every case the record
lists gone. Against a feed, ``import`` withdraws what is marked gone; a case
merely missing from the file stays until a ``--full-list`` leaves it out.
A record without case numbers is one case,
``stopncii``. Signal types: ``ImagePDQ`` -> pdq, ``VideoMD5`` -> md5; others
(``VideoTMK``, ``Text``, ``URL``) are counted as skipped. ``CSPFeedbacks`` is
other platforms' feedback and is ignored.

Files: JSON Lines, each line a hash record or a whole ``FetchHashes`` page
(``{"hashRecords": [...], ...}``), streamed line by line (each line at most
``MAX_LINE_BYTES``); or one JSON document -- a page or an array of records --
of at most ``MAX_DOCUMENT_BYTES`` (larger exports: use JSON Lines). Every
value is parsed by ``bounded.json_loads`` (size, depth, integers checked
first).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from federation.core.bounded import json_loads
from federation.core.errors import InputError
from federation.core.imports import Claim, ReadStats, Record, case_id, hash_value, labels_of

SIGNALS = {"ImagePDQ": "pdq", "VideoMD5": "md5"}
ACTIVE = {"Active", "Received"}
GONE = {"Withdrawn", "Deleted"}
NO_CASE = "stopncii"
MAX_LINE_BYTES = 8 * 1024 * 1024          # one page of 800 records fits
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024     # a whole-file document; larger exports are JSON Lines
MAX_CASES = 10_000                        # case numbers of one hash


def _status(value, where: str) -> str:
    if value not in ACTIVE | GONE:
        raise InputError(f"{where}: status {str(value)[:40]!r} is not one of {', '.join(sorted(ACTIVE | GONE))}")
    return value


def _claim(rec, where: str, seq: int, labels: tuple[str, ...], stats: ReadStats) -> Claim | None:
    if not isinstance(rec, dict):
        raise InputError(f"{where}: a hash record must be a JSON object")
    signal = rec.get("signalType")
    if not isinstance(signal, str):
        raise InputError(f"{where}, field signalType: missing or not a string")
    if signal not in SIGNALS:
        stats.skip(f"signal type {signal[:40]}")
        return None
    hash_type = SIGNALS[signal]
    value = hash_value(hash_type, rec.get("hashValue"), f"{where}, field hashValue")
    stamp = rec.get("lastModtimestamp", 0)
    if type(stamp) is not int or stamp < 0:
        raise InputError(f"{where}, field lastModtimestamp: {str(stamp)[:40]!r} is not a unix time")
    every = _status(rec.get("hashStatus"), f"{where}, field hashStatus")
    cases = rec.get("caseNumbers") or {}
    if not isinstance(cases, dict) or len(cases) > MAX_CASES:
        raise InputError(f"{where}, field caseNumbers: must be an object of at most {MAX_CASES} case: status pairs")
    if not cases:
        cases = {NO_CASE: every}
    claim = Claim(f"{hash_type}:{value.hex()}", stamp, seq)
    for case, status in cases.items():
        c = case_id(case, f"{where}, field caseNumbers")
        status = _status(status, f"{where}, field caseNumbers.{case}")
        record = Record(hash_type, value, c, labels)
        (claim.gone if every in GONE or status in GONE else claim.records).append(record)
    return claim


def _records(doc, where: str) -> list:
    if isinstance(doc, list):
        return [(f"{where}[{i}]", r) for i, r in enumerate(doc)]
    if isinstance(doc, dict) and "hashRecords" in doc:
        records = doc["hashRecords"]
        if not isinstance(records, list):
            raise InputError(f"{where}, field hashRecords: must be an array")
        return [(f"{where} hashRecords[{i}]", r) for i, r in enumerate(records)]
    return [(where, doc)]


def read_stopncii(stream, name: str, labels: Iterable[str] = (), stats: ReadStats | None = None) -> Iterator[Claim]:
    """Claims of a StopNCII export read from the binary ``stream``."""
    stats = stats if stats is not None else ReadStats()
    labels = labels_of(labels, f"{name}: --label")
    first = stream.readline(MAX_LINE_BYTES + 1)
    seq = 0
    try:
        doc = json_loads(first, "", max_bytes=MAX_LINE_BYTES, error=InputError) if first.strip() else None
        lines = True
    except InputError:
        doc, lines = None, False  # not one value per line: one document
    if not lines:
        rest = stream.read(MAX_DOCUMENT_BYTES + 1 - len(first))
        units = [(None, json_loads(first + rest, f"{name}: invalid JSON", max_bytes=MAX_DOCUMENT_BYTES,
                                   error=InputError))]
    else:
        units = _lines(stream, name, first, doc)
    for n, doc in units:
        for where, rec in _records(doc, f"{name}: line {n}" if n is not None else name):
            seq += 1
            stats.elements = seq
            claim = _claim(rec, where, seq, labels, stats)
            if claim is not None:
                yield claim
    if seq == 0:
        raise InputError(f"{name}: no hash records")


def _lines(stream, name: str, first: bytes, doc) -> Iterator[tuple[int, object]]:
    if len(first) > MAX_LINE_BYTES:
        raise InputError(f"{name}: line 1 is over {MAX_LINE_BYTES} bytes")
    if doc is not None:
        yield 1, doc
    n = 1
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        n += 1
        if len(line) > MAX_LINE_BYTES:
            raise InputError(f"{name}: line {n} is over {MAX_LINE_BYTES} bytes")
        if line.strip():
            yield n, json_loads(line, f"{name}: line {n}: invalid JSON", max_bytes=MAX_LINE_BYTES, error=InputError)
