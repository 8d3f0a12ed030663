"""Feedback from platforms: reports on a feed's hashes and cases. Pure.

A member platform reports, per hash or per case of a feed, what it found:

* ``seen`` -- the hash matched on the platform;
* ``actioned`` -- the platform acted on the match (a confirmed positive);
* ``false_positive`` -- the match was lawful content: the hash is wrong;
* ``disputed`` -- the case (or hash) is disputed, e.g. by its subject.

Each report carries a client-chosen ``id`` (``REPORT_ID_RE``): a report is
stored once per member and id, and the same id sent again with the same
content is a replay (the stored report is answered), with other content a
conflict. ``digest`` is what "the same content" means: the SHA-256 of the
report's canonical form, so whitespace or key order do not matter.

Reports are *authenticated* (a member token), never signed and never in the
log: what travels signed is the withdrawal a review publishes
(docs/platform.md, "Feedback").

``Target`` is what a report, or a review decision, is about: a hash (type and
value, optionally within one case) or a whole case. ``covers`` says which
reports a withdrawal of a target resolves.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from federation.core.batch import MAX_LINE_BYTES, decoded_lines, parse_hash
from federation.core.bounded import json_loads
from federation.core.entries import CASE_RE, LABEL_RE, MAX_LABELS
from federation.core.errors import InputError

KINDS = ("seen", "actioned", "false_positive", "disputed")
STATES = ("open", "withdrawn", "rejected")  # withdrawn: a review published its withdrawal
REPORT_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # full match, like the publishing API's batch ids
MAX_NOTE_CHARS = 1000
MAX_REPORTS = 1000  # per request: a batch of more is refused whole
FIELDS = ("id", "kind", "type", "hash", "case", "note", "labels")


@dataclass(frozen=True)
class Target:
    """A hash (``hash_type`` + ``value``, in every case or in ``case``) or a
    whole case (``case`` alone)."""

    hash_type: str | None = None
    value: bytes | None = None
    case: str | None = None

    @property
    def by_case(self) -> bool:
        return self.value is None

    def describe(self) -> str:
        """The target as ``review`` reads it back: ``md5:HEX``, ``md5:HEX@CASE`` or ``case:CASE``."""
        if self.by_case:
            return f"case:{self.case}"
        return f"{self.hash_type}:{self.value.hex()}" + (f"@{self.case}" if self.case else "")

    def covers(self, other: "Target") -> bool:
        """Whether withdrawing this target withdraws ``other``'s records too
        (so a review of this target resolves reports about ``other``)."""
        if self.by_case:
            return other.case == self.case
        if other.by_case or (other.hash_type, other.value) != (self.hash_type, self.value):
            return False
        return self.case is None or other.case == self.case


def _case(value, where: str) -> str:
    if not (isinstance(value, str) and CASE_RE.fullmatch(value)):
        raise InputError(f"{where}: case id {str(value)[:80]!r} must match {CASE_RE.pattern}")
    return value


def target(hash_type, value, case, where: str = "report") -> Target:
    """A target from text fields (a hash in any form ``batch.parse_hash``
    reads); raises ``InputError`` naming ``where`` and the field."""
    for name, v in (("type", hash_type), ("hash", value), ("case", case)):
        if v is not None and not isinstance(v, str):
            raise InputError(f"{where}: {name} must be a string, got {type(v).__name__}")
    case = case.strip() if case else None
    if case is not None:
        _case(case, where)
    if value:
        try:
            raw = parse_hash(hash_type or "", value)
        except InputError as e:
            raise InputError(f"{where}: field hash: {e}") from None
        return Target(hash_type.strip().lower(), raw, case)
    if hash_type:
        raise InputError(f"{where}: names a hash type but no hash (a case report has neither)")
    if case is None:
        raise InputError(f"{where}: needs a hash (type and hash) or a case")
    return Target(case=case)


def parse_item(text: str) -> Target:
    """A review item: ``TYPE:HASH``, ``TYPE:HASH@CASE`` or ``case:CASE``."""
    if not isinstance(text, str) or ":" not in text:
        raise InputError(f"review item {str(text)[:80]!r}: want TYPE:HASH, TYPE:HASH@CASE or case:CASE")
    kind, _, rest = text.strip().partition(":")
    if kind.lower() == "case":
        return Target(case=_case(rest, f"review item {text!r}"))
    value, _, case = rest.partition("@")
    return target(kind, value, case or None, f"review item {text!r}")


def _labels(value, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.replace(",", " ").replace(";", " ").split()
    if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
        raise InputError(f"{where}: labels must be a list of strings")
    labels = tuple(sorted({x.strip().lower() for x in value if x.strip()}))
    if len(labels) > MAX_LABELS:
        raise InputError(f"{where}: at most {MAX_LABELS} labels")
    for label in labels:
        if not LABEL_RE.fullmatch(label):
            raise InputError(f"{where}: label {label[:40]!r} must match {LABEL_RE.pattern}")
    return labels


def report_json(report_id: str, kind: str, target: Target, note: str, labels: tuple[str, ...]) -> dict:
    """A report as JSON (the route's and the CLI's form): by hash, by case, or both."""
    out = {"id": report_id, "kind": kind}
    if not target.by_case:
        out["type"], out["hash"] = target.hash_type, target.value.hex()
    if target.case is not None:
        out["case"] = target.case
    out["note"] = note
    out["labels"] = list(labels)
    return out


@dataclass(frozen=True)
class Report:
    id: str
    kind: str
    target: Target
    note: str = ""
    labels: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return report_json(self.id, self.kind, self.target, self.note, self.labels)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical form: equal for equal reports, whatever their spelling."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()).digest()


def parse_report(obj, where: str = "report", need_id: bool = True) -> Report:
    """One report from its JSON object; raises ``InputError`` naming the field.
    Without ``need_id`` a missing id becomes ``default_report_id``."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: must be a JSON object")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; allowed: {list(FIELDS)}")
    rid = obj.get("id")
    if rid in (None, "") and not need_id:
        rid = ""
    elif not (isinstance(rid, str) and REPORT_ID_RE.fullmatch(rid)):
        raise InputError(f"{where}: field id must match {REPORT_ID_RE.pattern} (the report's idempotency key)")
    else:
        where = f"{where} {rid}"
    kind = obj.get("kind")
    if kind not in KINDS:
        raise InputError(f"{where}: field kind must be one of {', '.join(KINDS)}, got {str(kind)[:40]!r}")
    note = obj.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS or any(ord(c) < 32 and c not in "\t\n" for c in note):
        raise InputError(f"{where}: field note must be text of at most {MAX_NOTE_CHARS} characters")
    return with_id(Report(rid, kind, target(obj.get("type"), obj.get("hash"), obj.get("case"), where),
                          note.strip(), _labels(obj.get("labels"), where)))


def parse_reports(doc) -> list[Report]:
    """The reports of one request body, ``{"reports": [...]}``: at most
    ``MAX_REPORTS``, ids unique. All or nothing: any bad report refuses all."""
    if not isinstance(doc, dict) or set(doc) != {"reports"} or not isinstance(doc["reports"], list):
        raise InputError('the body must be {"reports": [REPORT, ...]}')
    items = doc["reports"]
    if not 1 <= len(items) <= MAX_REPORTS:
        raise InputError(f"send 1 to {MAX_REPORTS} reports per request, got {len(items)}")
    reports = [parse_report(obj, f"report #{i + 1}") for i, obj in enumerate(items)]
    seen: set[str] = set()
    for r in reports:
        if r.id in seen:
            raise InputError(f"report id {r.id} appears twice in one request")
        seen.add(r.id)
    return reports


def kind_of_opinion(category: str, tags) -> str:
    """The report kind of a threatexchange opinion (``SignalOpinionCategory``
    name and tags): a tag naming one of ``KINDS`` wins (the stock CLI's
    ``label -l false_positive``); else NEGATIVE_CLASS is a false positive,
    INVESTIGATION_SEEN is seen, POSITIVE_CLASS is actioned."""
    named = [k for k in KINDS if k in {str(t).strip().lower() for t in tags}]
    if len(named) > 1:
        raise InputError(f"an opinion names more than one report kind: {', '.join(named)}")
    if named:
        return named[0]
    by_category = {"NEGATIVE_CLASS": "false_positive", "INVESTIGATION_SEEN": "seen", "POSITIVE_CLASS": "actioned"}
    if category not in by_category:
        raise InputError(f"opinion category {category!r} maps to no report kind")
    return by_category[category]


_RELATIVE = re.compile(r"([0-9]{1,6})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: int) -> int:
    """A ``--since`` value as a unix time: seconds since the epoch, an ISO
    8601 date or time (``2026-05-01``, ``2026-05-01T12:00:00Z``; UTC unless
    it says otherwise), or an age (``30m``, ``24h``, ``7d``)."""
    text = (text or "").strip()
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return int(text)
    m = _RELATIVE.fullmatch(text)
    if m:
        return now - int(m[1]) * _UNITS[m[2]]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")) if len(text) <= 40 else None
    except ValueError:
        when = None
    if when is None:
        raise InputError(f"--since {text[:40]!r}: want unix seconds, an ISO 8601 date or time, or an age "
                         "such as 24h or 7d")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp())


def default_report_id(report: Report) -> str:
    """An id for a report sent without one: derived from its content, so
    sending the same report again is a replay, not a second report."""
    body = dict(report.to_json(), id="")
    return "r-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def with_id(report: Report) -> Report:
    """``report`` with ``default_report_id`` when it has no id."""
    return report if report.id else replace(report, id=default_report_id(report))


def read_reports(lines, fmt: str) -> Iterator[Report]:
    """Reports from a file's lines (the CLI's batch form): CSV with a header
    naming some of ``FIELDS``, or JSONL, one report object a line. ``id`` may
    be left out (``default_report_id``). Errors name the line."""
    if fmt == "csv":
        reader = csv.DictReader(decoded_lines(lines))
        try:
            if reader.fieldnames is None or not {"kind"} <= set(reader.fieldnames):
                raise InputError("CSV needs a header line with at least: kind,type,hash (or case)")
            for row in reader:
                if any(row.get(None) or ()):
                    raise InputError(f"line {reader.line_num}: more fields than the header has columns")
                yield parse_report({k: v for k, v in row.items() if k is not None and v not in (None, "")},
                                   f"line {reader.line_num}", need_id=False)
        except csv.Error as e:
            raise InputError(f"line {reader.line_num}: invalid CSV: {e}") from None
        return
    if fmt != "jsonl":
        raise InputError(f"unknown report file format {fmt!r}; use csv or jsonl")
    for n, line in enumerate(decoded_lines(lines), 1):
        if line.strip():
            obj = json_loads(line, f"line {n}: invalid JSON", max_bytes=MAX_LINE_BYTES, error=InputError)
            yield parse_report(obj, f"line {n}", need_id=False)
