"""Whether a mirror can stand behind an answer: fail closed. Pure.

A platform blocks uploads on what a lookup says, so "no match" from a mirror
that is missing, never synced, broken or stale would let everything through.
Every lookup (CLI, platform CLI, HTTP) asks ``require`` first, and every
answer carries the ``Basis`` it stands on: per feed, the applied version,
tree size and the age of the newest verified timestamp.

A followed feed is *ready* unless, checked in this order:

* ``damaged``: an audit (``federation verify``, or a sync whose digest
  check failed) found its rows, digest or tree wrong: nothing it holds can
  be trusted until a sync rebuilds it from the upstreams (``sync.heal``);
* ``never_synced``: no verified timestamp at all (``fresh_time`` is NULL):
  nothing was ever verified to answer from;
* ``stale``: its newest verified timestamp is older than its maximum age
  (``federation follow --max-age``; ``freshness``), or its last sync found
  it stale (under a trust file: too old a witness quorum);
* ``failed``: its last sync failed verification as a whole
  (``sync_failed`` is a verification kind: signature, rollback, fork,
  digest, malformed); a transport failure alone is not a problem until it
  makes the feed stale.

``allow_stale`` (CLI ``--allow-stale``, HTTP ``allow_stale=true``) is an
operator's knowing choice to answer from ``failed`` and ``stale`` feeds
anyway; the answer still says what it is based on. It never answers from a
mirror that does not exist, follows no feed, or from a never-synced or
damaged feed (its rows are known to be wrong, not merely old).
"""
from __future__ import annotations

from dataclasses import dataclass

from federation.core.errors import UnavailableError
from federation.core.freshness import describe_age

VERIFICATION_KINDS = frozenset({"verification", "signature", "rollback", "fork", "digest", "malformed", "stale"})
NEVER_SYNCED, FAILED, STALE, DAMAGED = "never_synced", "failed", "stale", "damaged"
OVERRIDABLE = frozenset({FAILED, STALE})


@dataclass(frozen=True)
class Basis:
    """What an answer from one feed is based on, and what is wrong with it (if anything)."""

    feed: str
    origin: str
    version: int
    size: int
    fresh_time: int | None
    max_age: int
    age: int | None
    problem: str | None = None  # None: ready; else DAMAGED, NEVER_SYNCED, FAILED or STALE
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict:
        return dict(feed=self.feed, origin=self.origin, version=self.version, size=self.size,
                    verified_at=self.fresh_time, age=self.age, max_age=self.max_age, ready=self.ready,
                    problem=self.problem, detail=self.detail or None)

    def describe(self) -> str:
        """'tid: version 12 (size 340), as of 40 s ago' (+ the problem)."""
        text = f"{self.feed}: version {self.version} (size {self.size}), as of {describe_age(self.age)}"
        return text + (f" -- {self.problem}: {self.detail}" if self.problem else "")


def assess(follow, now: int) -> Basis:
    """The basis of feed ``follow`` (a ``mirror.Follow``) at time ``now``."""
    age = None if follow.fresh_time is None else now - follow.fresh_time
    base = dict(feed=follow.name, origin=follow.origin, version=follow.version, size=follow.applied_size,
                fresh_time=follow.fresh_time, max_age=follow.max_age, age=age)
    if follow.damaged:
        return Basis(**base, problem=DAMAGED, detail=f"an audit found its rows wrong ({follow.damaged}): the next "
                                                     "'federation sync' rebuilds it from its upstreams")
    if follow.fresh_time is None:
        failed = f"; its last sync failed ({follow.last_error or follow.sync_failed})" if follow.sync_failed else ""
        return Basis(**base, problem=NEVER_SYNCED, detail="never synced: nothing verified to answer from "
                                                          f"(run 'federation sync'){failed}")
    if age > follow.max_age:
        return Basis(**base, problem=STALE, detail=f"newest verified timestamp is {describe_age(age)}, over the "
                                                   f"maximum age of {follow.max_age} s")
    if follow.sync_failed == "stale":  # e.g. a witness quorum older than the trust file allows
        return Basis(**base, problem=STALE, detail=f"the last sync found it stale ({follow.last_error})")
    if follow.sync_failed in VERIFICATION_KINDS:
        why = follow.last_error or follow.sync_failed
        return Basis(**base, problem=FAILED, detail=f"the last sync failed verification ({why})")
    return Basis(**base)


def require(bases: list[Basis], allow_stale: bool = False, where: str = "this mirror") -> list[Basis]:
    """``bases`` if an answer may be given from them, else ``UnavailableError``
    naming every feed that stands in the way."""
    if not bases:
        raise UnavailableError(f"{where} follows no feed: an empty mirror cannot say 'no match' "
                               "(see 'federation follow')")
    blocking = [b for b in bases if not b.ready and not (allow_stale and b.problem in OVERRIDABLE)]
    if blocking:
        hint = ("" if any(b.problem in (NEVER_SYNCED, DAMAGED) for b in blocking)
                else "; --allow-stale (HTTP: allow_stale=true) answers anyway")
        raise UnavailableError(f"{where} cannot stand behind an answer: "
                               + "; ".join(b.describe() for b in blocking) + hint, tuple(blocking))
    return bases
