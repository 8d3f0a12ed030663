"""Freshness without witnesses: the log's own timestamp on its checkpoint. Pure.

A relay or CDN that keeps serving an old checkpoint freezes every mirror
behind it, and every byte it serves still verifies. To notice, a mirror needs
a signed time. Witness cosignatures give one to feeds followed with a trust
file (``trust.check_cosignatures``); every feed gets one from its publisher:

* Next to its Ed25519 signature line (type 0x01), the publisher adds a
  c2sp.org/tlog-cosignature line (type 0x04) made with the same key under the
  same name (the origin). Its meaning is the tlog-cosignature one, said by
  the log itself: "as of time T, this is the newest tree of this log".
  ``stamp_note`` adds it at every publish; the publisher re-stamps the served
  checkpoint while nothing changes (``federation feed refresh`` from cron,
  ``federation serve``, ``federation export --watch``), every
  ``REFRESH_INTERVAL`` seconds.
* A mirror takes the newest valid timestamp by a trusted log key
  (``log_timestamp``), a witness quorum's time when it follows a trust file,
  and the time of the last seal it applied: the newest of those is when its
  applied tree was last known to be current. Past the feed's maximum age
  (``federation follow --max-age``, default ``DEFAULT_MAX_AGE``) a sync
  reports ``stale`` and lookups fail closed (``readiness``). The maximum age
  should span a few of the publisher's refreshes (``short_max_age``): equal
  to the interval, one late refresh fails every lookup.

Why the log key and not a key of its own: a mirror that follows a plain vkey
(the README's path) then needs nothing more, a key rotation carries
freshness along, and the statement is the log's own. Verifiers that know only
the log key ignore the line: its key ID hashes in type 0x04, so it is a
signature by an unknown key, which signed-note verifiers MUST ignore (Go's
``sumdb/note`` does: tests/protocol/test_conformance_go.py). Cross-use is harmless
(docs/PROTOCOL.md section 3a): the Ed25519 part of a timestamp line is a
valid log signature over ``cosignature/v1\ntime T\n<checkpoint>``, but no
checkpoint parser accepts that text (its first line is not the origin, its
second no tree size); and no checkpoint signature is a valid 0x04 message
(a checkpoint's second line is a size, never ``time T``). ``cosignature/v1``
is refused as an origin too (``check_origin``).

Under a trust file only the witness quorum vouches for freshness: the log's
own timestamp and seal times are the log's word (``sync.orchestrator``).

A timestamp too far in the future (beyond ``trust.clock_skew_allowance`` of
the maximum age) is ignored, so it cannot stretch freshness (a seal's time
too: ``usable_time``); when nothing else is fresh, a sync that saw one tells
the operator to check this machine's clock rather than blame the upstream.
A line by the
log's timestamp key that does not verify is ignored too (reported): a relay
that appends junk must not halt its followers, and without the line the feed
only goes stale sooner -- the safe side.
"""
from __future__ import annotations

from dataclasses import dataclass

from federation.core.checkpoint import RESERVED_ORIGIN, check_origin_text
from federation.core.errors import InputError, MalformedError
from federation.core.note import SIG_COSIGNATURE_V1, Note, NoteSignature, Signer, Verifier, parse_note
from federation.core.trustfile import clock_skew_allowance

DEFAULT_MAX_AGE = 86400  # a day: what a mirror tolerates without a signed sign of life
REFRESH_INTERVAL = 3600  # how often a quiet feed's checkpoint is re-stamped
COSIGNATURE_HEADER = RESERVED_ORIGIN


def check_origin(origin: str) -> str:
    """Refuse an origin no checkpoint may carry (docs/PROTOCOL.md section 3),
    among them the one whose checkpoint text would begin like a
    tlog-cosignature message (see the module docstring)."""
    problem = check_origin_text(origin)
    if problem:
        raise InputError(f"origin {origin[:100]!r} {problem}")
    return origin


def stamp_note(note_bytes: bytes, signers: list[Signer], when: int) -> bytes:
    """``note_bytes`` with a fresh timestamp line by each of ``signers`` (log
    keys), in place of any older one by the same key; other lines are kept."""
    note = parse_note(note_bytes)
    lines = [s.timestamp(note.text, when) for s in signers]
    replaced = {(s.name, s.key_id) for s in lines}
    kept = tuple(s for s in note.signatures if (s.name, s.key_id) not in replaced)
    return Note(note.text, kept + tuple(lines)).to_bytes()


def timestamp_lines(note: Note, log_keys: list[Verifier]) -> list[tuple[Verifier, NoteSignature]]:
    """The signature lines of ``note`` made by the timestamp keys of ``log_keys``."""
    twins = {(t.name, t.key_id): t for t in (k.timestamp_key() for k in log_keys if k.sig_type != SIG_COSIGNATURE_V1)}
    return [(twins[(s.name, s.key_id)], s) for s in note.signatures if (s.name, s.key_id) in twins]


@dataclass(frozen=True)
class LogStamp:
    """The newest usable log timestamp on a note (None: none), and why other
    lines by the log's timestamp keys were not used. ``future``: the newest
    timestamp that verified but lies beyond the clock-skew allowance (None:
    none) -- with no usable one, a sign that this machine's clock is behind."""

    time: int | None
    ignored: tuple[str, ...] = ()
    future: int | None = None


def log_timestamp(note: Note | bytes, log_keys: list[Verifier], now: int, max_age: int) -> LogStamp:
    """The newest valid, not future-dated timestamp by a trusted log key."""
    if isinstance(note, bytes):
        try:
            note = parse_note(note)
        except MalformedError as e:
            return LogStamp(None, (f"note does not parse: {e}",))
    best: int | None = None
    future: int | None = None
    ignored: list[str] = []
    limit = now + clock_skew_allowance(max_age)
    for key, sig in timestamp_lines(note, log_keys):
        if not key.verify(note.text, sig.signature):
            ignored.append(f"timestamp by {key.name}+{key.key_id:08x} does not verify")
            continue
        t = key.cosignature_time(sig.signature) or 0
        if t > limit:
            ignored.append(f"timestamp by {key.name}+{key.key_id:08x} is {t - now} s in the future")
            future = t if future is None else max(future, t)
            continue
        best = t if best is None else max(best, t)
    return LogStamp(best, tuple(ignored), future)


def usable_time(t: int | None, now: int, max_age: int) -> int | None:
    """``t`` (a verified time, e.g. a seal's) unless it lies beyond the clock-skew allowance."""
    if t is None or t > now + clock_skew_allowance(max_age):
        return None
    return t


def describe_age(age: int | None) -> str:
    """'40 s ago', '3 h ago', 'never'."""
    if age is None:
        return "never"
    if age < 0:
        return f"{-age} s in the future"
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if age >= 2 * seconds:
            return f"{age // seconds} {unit} ago"
    return f"{age} s ago"


MIN_MAX_AGE_REFRESHES = 3  # a feed's maximum age should span this many of the publisher's refreshes


def short_max_age(max_age: int, refresh_interval: float = REFRESH_INTERVAL) -> str:
    """Why ``max_age`` is too short for a publisher refreshing every
    ``refresh_interval`` seconds without witnesses, or "" if it is not."""
    if max_age >= MIN_MAX_AGE_REFRESHES * refresh_interval:
        return ""
    return (f"a maximum age of {max_age} s is under {MIN_MAX_AGE_REFRESHES} times the publisher's refresh "
            f"interval ({refresh_interval:g} s, the default of 'serve' and of an hourly 'feed refresh'): one late "
            "refresh makes the feed stale and every lookup fail closed. Use a few times the interval the "
            f"publisher refreshes at ({int(MIN_MAX_AGE_REFRESHES * refresh_interval)} s or more), unless it "
            "refreshes more often")
