"""Timestamped cosignatures (c2sp.org/tlog-cosignature, Ed25519 type 0x04).

* ``core.note.Cosigner`` makes cosignatures: ``time`` || Ed25519 over
  ``"cosignature/v1\\ntime <T>\\n" || checkpoint note text``.
* ``trust.witness_client.WitnessClient`` asks a c2sp.org/tlog-witness for
  one (``add-checkpoint``).
* ``cosign_feed`` is the publisher's step: take the feed's log-signed
  checkpoint, collect fresh cosignatures from its own cosigner and its
  witnesses, and store the note with those signature lines added
  (compare-and-swap on the stored note, so a concurrent publish wins).
  ``refresh_forever`` runs it on a schedule even when nothing changed: each
  round renews the timestamps mirrors use to detect a frozen feed.
* ``CosigningConfig`` (stored per feed in the publisher DB) closes the
  window after a publish: ``Publisher.publish`` then keeps the new
  checkpoint *pending* and the old one served, and ``cosign_feed`` serves
  the pending one only once it carries ``quorum`` cosignatures (and passes
  the feed's own trust file). Invariant: a mirror is never served a
  checkpoint without the cosignatures it requires, nor a cosignature its
  trust file would not count (one bad witness loses its line, not the
  round); the price is that a publish with fewer than ``quorum`` good
  witnesses is committed but not yet visible.

Cosigner key files use the signed-note private key format with type 0x04:
``PRIVATE+KEY+name+keyid+base64(0x04 || seed)``, mode 0600. The spec
requires a distinct key per cosigner and role; ``trust`` refuses a key used
both as a log key and as a witness key.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from federation.core.errors import FederationError, InputError, MalformedError, SignatureError, StorageError, \
    Unreachable
from federation.core.note import SIG_COSIGNATURE_V1, Cosigner, Note, NoteSignature, parse_note, parse_vkey, \
    with_signatures
from federation.core.trustfile import MAX_CLOCK_SKEW, TrustFile, check_cosignatures, clock_skew_allowance, \
    cosignature_problem
from federation.store.trust_chain import TrustChain
from federation.trust.witness_client import WitnessClient, cosign_with_witness

log = logging.getLogger("federation.cosign")

MAX_RESPONSE = 16 * 1024


# ---- tlog-witness client --------------------------------------------------------


# ---- the publisher's cosigning round ----------------------------------------------


@dataclass(frozen=True)
class CosignOutcome:
    """What one cosigning round did for a feed.

    ``status``: ``cosigned`` (the served checkpoint got fresh cosignatures),
    ``kept`` (the refreshed note would be refused by the feed's trust file
    while the served one is not, so the served one stays; ``problem`` says
    why), ``promoted`` (a pending checkpoint got its cosignatures and is
    served now), ``pending`` (too few cosignatures: the pending checkpoint
    stays unserved, ``problem`` says why) or ``changed`` (a publish replaced
    the note meanwhile; the next round cosigns the new one).

    ``cosigned_by`` are this round's cosignatures that passed the check
    mirrors apply; ``failures`` name the cosigners that gave none, or a bad
    one (dropped).
    """

    feed: str
    status: str
    size: int
    note: bytes | None
    cosigned_by: tuple[str, ...] = ()
    failures: tuple[tuple[str, FederationError], ...] = ()  # (witness name, why)
    problem: str = ""
    quorum: int = 1

    @property
    def ok(self) -> bool:
        """False when the round fell short: a pending checkpoint still unserved,
        a refreshed note refused or kept back, or fewer fresh cosignatures
        than the quorum (``cosign run --once`` then exits 1)."""
        if self.status in ("promoted", "changed"):
            return True
        return self.status == "cosigned" and not self.problem and len(self.cosigned_by) >= self.quorum

    def describe(self) -> str:
        by = ", ".join(self.cosigned_by) or "nobody"
        failed = "".join(f"; witness {w}: {e}" for w, e in self.failures)
        if self.status == "promoted":
            return f"size {self.size} cosigned by {by}; now served{failed}"
        if self.status in ("cosigned", "kept"):
            what = (f"served checkpoint of size {self.size} re-cosigned by {by}" if self.status == "cosigned"
                    else f"served checkpoint of size {self.size} kept: its refresh (cosigned by {by}) would be refused")
            short = (f"; only {len(self.cosigned_by)} of the {self.quorum} required fresh cosignatures"
                     if len(self.cosigned_by) < self.quorum else "")
            problem = f"; {self.problem}" if self.problem else ""
            return f"{what}{short}{problem}{failed}"
        if self.status == "changed":
            return f"a publish replaced the checkpoint of size {self.size} meanwhile; the next round cosigns it"
        return f"size {self.size} is committed but NOT served: {self.problem}{failed}"


def _log_signatures(note: Note, origin: str) -> tuple[NoteSignature, ...]:
    # The log's own lines are named after the origin: its Ed25519 signatures
    # (64 bytes) and its timestamps (``freshness``, 72 bytes). A witness's
    # name is never the origin (``trust`` refuses a log key as a witness key).
    # After a key rotation both keys' lines are kept until the next publish.
    return tuple(s for s in note.signatures if s.name == origin)


def trust_problem(trust: TrustFile | None, name: str, note: bytes, now: int) -> str:
    """Why mirrors under ``trust`` (the feed's newest published trust
    version) would refuse ``note``, or "" (also when there is none)."""
    if trust is None:
        return ""
    try:
        check_cosignatures(trust, note, now, f"{name} checkpoint")
    except FederationError as e:
        return f"mirrors under {trust.describe()} would refuse it: {e}"
    return ""


def promotion_problem(publisher, name: str, note: bytes, cosigned: int, quorum: int, now: int) -> str:
    """Why ``note`` must not be served yet, or "" when it may be.

    Needs ``quorum`` countable cosignatures from this round and, when the
    feed publishes a trust chain, exactly what a mirror under its newest
    version checks (``trust.check_cosignatures``): so a checkpoint mirrors
    would refuse is never put in place of one they accept.
    """
    if cosigned < quorum:
        return f"cosigned by {cosigned} of the {quorum} required cosigners"
    return trust_problem(TrustChain(publisher.conn, name).current(), name, note, now)


async def cosign_feed(publisher, name: str, cosigners: list[Cosigner], witnesses: list[WitnessClient],
                      quorum: int = 1, now: int | None = None) -> CosignOutcome:
    """One cosigning round for feed ``name``.

    Cosigns the pending checkpoint if there is one (``Publisher.publish`` of
    a feed with cosigning configured), else the served one. The log's
    signature lines are kept; each cosigner's line is replaced by a fresh
    one, and a witness that fails this round keeps its previous line for
    the same tree (still valid, only older), so a refresh never lowers the
    number of cosignatures a mirror sees.

    The publisher never serves a note its own trust file would refuse:
    every cosignature line, fresh or previous, passes the check mirrors
    apply (``trust.cosignature_problem`` with the trust file's clock-skew
    allowance) or is dropped, alone: a witness whose clock runs ahead, or
    whose cosignature does not verify, loses its line, not the round. A
    pending checkpoint is served only with ``quorum`` countable fresh
    cosignatures (and what the feed's trust file requires); a refreshed
    served note replaces the served one only if the trust file accepts it
    or refuses the served one too. Both by compare-and-swap, so a
    concurrent publish wins.
    """
    feed = publisher.feed(name)
    pending = feed.pending_checkpoint
    current = parse_note(pending if pending is not None else feed.checkpoint)
    logged = _log_signatures(current, feed.origin)
    keys = {(c.name, c.verifier.key_id): c.verifier for c in cosigners}
    keys.update({(w.key.name, w.key.key_id): w.key for w in witnesses})
    previous = tuple(s for s in current.signatures if s not in logged and (s.name, s.key_id) in keys)
    base = Note(current.text, logged)
    base_bytes = base.to_bytes()
    t = int(time.time()) if now is None else now
    sigs = [c.cosign(base.text, t) for c in cosigners]
    results = await asyncio.gather(*(cosign_with_witness(publisher, feed, base_bytes, w) for w in witnesses),
                                   return_exceptions=True)
    if pending is not None and any(not isinstance(r, Unreachable) for r in results):
        # A witness received the pending checkpoint (an answer, or a request
        # that may have reached it): it may keep it, so it is recorded as
        # seen before anything else (``store.served``). Only a witness we
        # never connected to saw nothing.
        await asyncio.to_thread(publisher.record_witnessed, name, pending)
    failures = []
    for w, r in zip(witnesses, results):
        if isinstance(r, BaseException):
            if isinstance(r, ValueError) and not isinstance(r, FederationError):
                r = MalformedError(str(r))
            if not isinstance(r, FederationError):
                raise r
            log.warning("%s: no cosignature from witness %s: %s", name, w.key.name, r)
            failures.append((w.key.name, r))
        else:
            sigs.append(r)
    trust = TrustChain(publisher.conn, name).current()
    allowance = clock_skew_allowance(trust.max_staleness) if trust is not None else MAX_CLOCK_SKEW

    def problem_of(s: NoteSignature) -> str:
        return cosignature_problem(keys[(s.name, s.key_id)], base.text, s.signature, t, allowance)

    fresh = []
    for s in sigs:
        why = problem_of(s)
        if why:
            log.warning("%s: dropped the cosignature of %s: it %s", name, s.name, why)
            failures.append((s.name, SignatureError(f"cosignature dropped: it {why}")))
        else:
            fresh.append(s)
    # A previous line of a witness that gave no good one this round stays, if
    # it still counts (it may predate this check, or be future-dated still).
    kept = tuple(s for s in previous if not problem_of(s))
    new = with_signatures(Note(current.text, logged + kept), fresh)
    by = tuple(s.name for s in fresh)
    outcome = dict(cosigned_by=by, failures=tuple(failures), quorum=quorum)
    if pending is None:
        problem = trust_problem(trust, name, new, t)
        if problem and not trust_problem(trust, name, feed.checkpoint, t):
            return CosignOutcome(name, "kept", feed.size, None, problem=problem, **outcome)
        ok = await asyncio.to_thread(publisher.replace_checkpoint, name, feed.checkpoint, new)
        return CosignOutcome(name, "cosigned" if ok else "changed", feed.size, new if ok else None,
                             problem=problem if ok else "", **outcome)
    problem = promotion_problem(publisher, name, new, len(fresh), quorum, t)
    if problem:
        return CosignOutcome(name, "pending", feed.size, None, problem=problem, **outcome)
    ok = await asyncio.to_thread(publisher.promote_checkpoint, name, pending, new)
    return CosignOutcome(name, "promoted" if ok else "changed", feed.size, new if ok else None, **outcome)


async def refresh_checkpoint(publisher, name: str, cosigners: list[Cosigner], witnesses: list[WitnessClient],
                             now: int | None = None, quorum: int = 1) -> bytes | None:
    """``cosign_feed``, returning the stored note, or None when nothing was
    stored (a publish replaced the note meanwhile, or a pending checkpoint
    is still short of its quorum)."""
    return (await cosign_feed(publisher, name, cosigners, witnesses, quorum, now)).note


async def refresh_forever(publisher, names: list[str], cosigners: list[Cosigner], witnesses: list[WitnessClient],
                          interval: float, stop: asyncio.Event | None = None, plans: dict | None = None) -> None:
    """Refresh every feed's cosignatures every ``interval`` seconds until ``stop``.

    ``plans`` (name -> (cosigners, witnesses, quorum)) overrides the shared
    cosigners for a feed (its stored ``CosigningConfig``).
    """
    stop = stop or asyncio.Event()
    while not stop.is_set():
        for name in names:
            c, w, q = plans[name] if plans and name in plans else (cosigners, witnesses, 1)
            try:
                out = await cosign_feed(publisher, name, c, w, q)
                if not out.ok:
                    log.warning("%s: %s", name, out.describe())
            except FederationError as e:
                log.warning("%s: cosignature refresh failed: %s", name, e)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass


# ---- stored configuration ----------------------------------------------------------


@dataclass(frozen=True)
class CosigningConfig:
    """A feed's cosigners, kept in the publisher DB (``feed_cosigning``).

    With a config, ``Publisher.publish`` holds each new checkpoint back
    (pending) until ``cosign_feed`` has ``quorum`` cosignatures for it.
    ``keys`` are paths of the publisher's own cosigner key files (never the
    keys themselves); ``witnesses`` are (submission prefix URL, vkey).
    """

    keys: tuple[str, ...]
    witnesses: tuple[tuple[str, str], ...]
    quorum: int | None  # None: the feed's trust file's quorum at each round (every cosigner without one)

    def __post_init__(self):
        total = len(self.keys) + len(self.witnesses)
        if total == 0:
            raise InputError("cosigning needs at least one cosigner key or witness")
        if self.quorum is not None and not 1 <= self.quorum <= total:
            raise InputError(f"cosigning quorum {self.quorum} with {total} cosigner(s); want 1..{total}")
        # One cosigner, one vote: a key listed twice would count twice here
        # while mirrors count it once (trust files refuse it too).
        vkeys = [v for _, v in self.witnesses]
        if len(set(vkeys)) != len(vkeys) or len(set(self.keys)) != len(self.keys):
            raise InputError("a cosigner key or witness is listed twice")
        for url, vkey in self.witnesses:
            if not url.startswith(("http://", "https://")):
                raise InputError(f"witness URL {url!r} must start with http:// or https://")
            try:
                v = parse_vkey(vkey)
            except FederationError as e:
                raise InputError(f"witness key {vkey!r}: {e}") from None
            if v.sig_type != SIG_COSIGNATURE_V1:
                raise InputError(f"witness key {vkey!r} is not a cosigner key (type 0x04)")

    def resolved_quorum(self, trust_quorum: int | None) -> int:
        """The quorum a round needs: this config's own, else the trust file's
        (bounded by the cosigners configured), else every cosigner."""
        total = len(self.keys) + len(self.witnesses)
        if self.quorum is not None:
            return self.quorum
        return min(trust_quorum, total) if trust_quorum is not None else total

    def to_json(self) -> str:
        return json.dumps({"keys": list(self.keys), "witnesses": [{"url": u, "vkey": v} for u, v in self.witnesses],
                           "quorum": self.quorum}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CosigningConfig":
        try:
            d = json.loads(text)
            quorum = d["quorum"]
            return cls(tuple(d["keys"]), tuple((w["url"], w["vkey"]) for w in d["witnesses"]),
                       None if quorum is None else int(quorum))
        except (ValueError, KeyError, TypeError, InputError) as e:
            raise StorageError(f"stored cosigning configuration is unreadable: {e}") from None


def load_config(publisher, name: str) -> CosigningConfig | None:
    text = publisher.cosigning(name)
    return None if text is None else CosigningConfig.from_json(text)


def store_config(publisher, name: str, config: CosigningConfig | None) -> None:
    """Set (or, with None, remove) feed ``name``'s cosigning configuration.

    Removing it while a checkpoint is pending is refused: that version
    would then never be served (finish it with ``cosign run`` first).
    """
    publisher.set_cosigning(name, None if config is None else config.to_json())
