"""Lists that clearinghouses hold today, read as *claims*. Pure.

Each reader (``ncmec``, ``stopncii``, ``hma``) streams one file and yields
``Claim``s: what one element of the file says about one *group* of records
-- an NCMEC entry (its fingerprints), a StopNCII hash record (its cases), an
HMA / threatexchange CSV row. Within a group the newest claim wins (its
``stamp``, then its position ``seq`` in the file), so a file whose elements
are out of time order -- an NCMEC entry deleted before, in the file, it was
added -- resolves as the newest statement says. A winning claim lists the
group's records that are active (``records``) and those it says are gone
(``gone``; a deleted NCMEC entry is ``gone_case``: its whole case).

Readers check everything they read and raise ``InputError`` naming the
file, the element (or line) and the field; they hold one element at a time.
What the claims mean for a feed -- a full list diffed against its active
set, or a delta -- is ``store.fulllist``'s job.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from federation.core.batch import parse_hash
from federation.core.entries import CASE_RE, LABEL_RE, MAX_LABELS
from federation.core.errors import InputError

FORMATS = ("ncmec", "stopncii", "hma")


@dataclass(frozen=True)
class Record:
    hash_type: str
    value: bytes
    case: str
    labels: tuple[str, ...]

    @property
    def key(self) -> tuple[str, bytes, str]:
        return (self.hash_type, self.value, self.case)


@dataclass
class Claim:
    group: str                      # within a group, the newest claim wins
    stamp: int                      # the element's own time (0: none)
    seq: int                        # its position in the file: later wins a tie
    records: list[Record] = field(default_factory=list)
    gone: list[Record] = field(default_factory=list)     # records this claim says are withdrawn
    gone_case: str | None = None                          # a whole case this claim says is gone


@dataclass
class ReadStats:
    """What a reader saw besides claims (for the dry-run summary)."""

    elements: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # why -> how many (e.g. "fingerprint netclean")

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def detect_format(name: str) -> str:
    """The format a file's name suggests: .xml NCMEC, .json/.jsonl StopNCII, .csv HMA."""
    lower = name.lower()
    if lower.endswith(".xml"):
        return "ncmec"
    if lower.endswith((".json", ".jsonl", ".ndjson")):
        return "stopncii"
    if lower.endswith(".csv"):
        return "hma"
    raise InputError(f"{name}: cannot tell the format from the name; pass --format ({', '.join(FORMATS)})")


def hash_value(hash_type: str, text, where: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"{where}: not a string")
    try:
        return parse_hash(hash_type, text)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def case_id(text, where: str) -> str:
    if not (isinstance(text, str) and CASE_RE.fullmatch(text)):
        raise InputError(f"{where}: case id {str(text)[:80]!r} must match {CASE_RE.pattern}")
    return text


def labels_of(values, where: str) -> tuple[str, ...]:
    """Sorted unique labels, each checked (lower-cased first)."""
    out = sorted({v.strip().lower() for v in values if v and v.strip()})
    if len(out) > MAX_LABELS:
        raise InputError(f"{where}: {len(out)} labels, at most {MAX_LABELS}")
    for label in out:
        if not LABEL_RE.fullmatch(label):
            raise InputError(f"{where}: label {label[:40]!r} must match {LABEL_RE.pattern}")
    return tuple(out)
