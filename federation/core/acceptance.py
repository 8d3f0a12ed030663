"""Acceptance of a signed checkpoint by a mirror, in order (pure).

In the style of python-tuf's ``TrustedMetadataSet``: one ``Acceptance``
holds what the mirror trusts for a feed (``TrustedState``) and takes new
bytes into that trust only in the order of docs/PROTOCOL.md section 7 (and
sections 10 and 11). The caller does the I/O: it fetches what the object
asks for, hands over the bytes, and stores what comes back verified. No
network, no SQLite, no clock here.

States, and the step that leaves each one::

    NEW       open_checkpoint(raw)       signature and origin (section 3)       -> OPENED
    OPENED    accept_checkpoint(fresh)   witness quorum (section 10, checked by
                                         the caller's trust policy and passed
                                         in), rollback, fork, nothing new       -> ACCEPTED
                                                                   (NothingNew) -> CURRENT
    ACCEPTED  tiles_for_entries()        the tiles a log sync needs             -> TILES
              tiles_for_extension()      only those proving extension (gossip)  -> TILES
              tiles_for_head(header)     those proving a snapshot's head        -> TILES
    TILES     add_tile(...)*             only tiles it asked for, each once
              prove_tiles()              they hash to the signed root           -> PROVEN
              prove_head()               (head) seal inclusion, compact range,
                                         count; returns a ``VerifiedHead``       -> HEAD
    PROVEN    prove_extension()          the new tree contains every tree the
                                         mirror trusts (``fork`` otherwise)     -> EXTENDED
    EXTENDED  bundles()                  the entry bundles to fetch, in order   -> ENTRIES
    ENTRIES   add_bundle(...)*           each hashes to its proven tile entry;
                                         returns verified versions to apply
              finish()                   the last entry is a seal               -> DONE

Any other call is refused with ``OrderError`` (a bug of the caller),
naming the step and the state: a caller that skips a step gets an error,
never an unverified object. Whatever a step raises -- a verification error
of the remote's bytes, or ``OrderError`` -- leaves the object FAILED, and
every later step is refused: the caller starts again with a new
``Acceptance`` from the mirror's stored state (nothing unverified was
handed out). CURRENT, HEAD and DONE are final, and so is EXTENDED after
``tiles_for_extension``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from federation.core.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint
from federation.core.errors import NothingNew, OrderError
from federation.core.headproof import SnapshotClaim, VerifiedHead, head_tiles, verify_head
from federation.core.layout import tile_path
from federation.core.merkle import CompactRange
from federation.core.note import Verifier
from federation.core.tiles import parse_hash_tile
from federation.core.trustfile import Freshness
from federation.core import verify as V
from federation.core.verify import TrustedState

NEW, OPENED, ACCEPTED, CURRENT, FAILED = "NEW", "OPENED", "ACCEPTED", "CURRENT", "FAILED"
TILES, PROVEN, EXTENDED, ENTRIES, DONE, HEAD = "TILES", "PROVEN", "EXTENDED", "ENTRIES", "DONE", "HEAD"

ENTRIES_GOAL, EXTENSION_GOAL, HEAD_GOAL = "entries", "extension", "head"


class Acceptance:
    """One feed's trusted state, and the acceptance of one new checkpoint.

    ``quorum``: the feed is followed under a trust file, so a checkpoint is
    accepted only with its witness quorum's ``Freshness`` (the trust
    policy's check, which needs the opened note, runs between
    ``open_checkpoint`` and ``accept_checkpoint``).
    """

    def __init__(self, origin: str, keys: list[Verifier], trusted: TrustedState, quorum: bool = False):
        self.origin = origin
        self.keys = keys
        self.trusted = trusted
        self.quorum = quorum
        self.state = NEW
        self.signed: SignedCheckpoint | None = None
        self.fresh: Freshness | None = None
        self._goal: str | None = None
        self._asked: set[tuple[int, int, int]] = set()
        self._plan_done = False
        self._tiles: dict[tuple[int, int], list[bytes]] = {}
        self._header: SnapshotClaim | None = None
        self._entries: V.EntryVerifier | None = None
        self._expect: Iterator[tuple[int, int, int]] | None = None

    @classmethod
    def of_peer(cls, origin: str, keys: list[Verifier], ours: Checkpoint) -> "Acceptance":
        """For comparing a peer's checkpoint with ``ours`` (``gossip``): the
        only tree trusted is ``ours``; nothing is applied."""
        return cls(origin, keys, TrustedState(ours, 0, CompactRange(), 0))

    # ---- state -------------------------------------------------------------------

    @property
    def checkpoint(self) -> Checkpoint:
        """The new checkpoint (signature and origin verified)."""
        if self.signed is None:
            raise OrderError(f"{self.origin}: no checkpoint opened yet (state {self.state})")
        return self.signed.checkpoint

    @property
    def version(self) -> int:
        """Version of the last seal verified so far (the trusted one before any)."""
        return self._entries.version if self._entries is not None else self.trusted.version

    def _refuse(self, message: str) -> OrderError:
        self.state = FAILED
        return OrderError(f"{self.origin}: {message}")

    def _require(self, step: str, state: str, goal: str | None = None) -> None:
        if self.state != state or (goal is not None and self._goal != goal):
            want = state + (f" ({goal})" if goal is not None else "")
            now = self.state + (f" ({self._goal})" if self._goal is not None else "")
            raise self._refuse(f"{step} is a step of state {want}, the acceptance is in state {now}")

    def _step(self, fn, *args):
        """Run one step; whatever it raises leaves the object FAILED."""
        try:
            return fn(*args)
        except NothingNew:
            self.state = CURRENT
            raise
        except BaseException:
            self.state = FAILED
            raise

    # ---- 1. the checkpoint ---------------------------------------------------------

    def open_checkpoint(self, raw: bytes) -> SignedCheckpoint:
        """Verify ``raw`` (a checkpoint note) against the trusted keys and origin.

        ``SignatureError`` / ``MalformedError`` otherwise.
        """
        self._require("open_checkpoint", NEW)

        def run():
            self.signed = open_checkpoint(raw, self.origin, self.keys)
            self.state = OPENED
            return self.signed
        return self._step(run)

    def accept_checkpoint(self, fresh: Freshness | None = None) -> Checkpoint:
        """Accept the opened checkpoint as the target of this sync.

        ``fresh``: the trust policy's verdict on it (quorum and freshness
        already checked by ``TrustPolicy.check``); required under a trust
        file. Raises ``RollbackError`` / ``ForkError``, or ``NothingNew``
        when the mirror already holds this tree (state CURRENT: the caller
        may still re-serve a fresher note of it and record its freshness).
        """
        self._require("accept_checkpoint", OPENED)
        if self.quorum and fresh is None:
            raise self._refuse("under a trust file, accept_checkpoint needs the witness quorum's result "
                               "(TrustPolicy.check of the opened note)")

        def run():
            self.fresh = fresh
            V.check_progress(self.trusted, self.checkpoint)
            self.state = ACCEPTED
            return self.checkpoint
        return self._step(run)

    # ---- 2. hash tiles -----------------------------------------------------------

    def _plan(self, goal: str, plan: Callable[[], Iterable[tuple[int, int, int]]]) -> Iterator[tuple[int, int, int]]:
        self._require(f"tiles_for_{goal}", ACCEPTED)
        tiles = self._step(plan)
        self.state, self._goal = TILES, goal
        return self._asking(iter(tiles))

    def _asking(self, tiles: Iterator[tuple[int, int, int]]) -> Iterator[tuple[int, int, int]]:
        """Record each tile as it is asked for; lazily, so a plan for an
        absurd signed size costs nothing until it is fetched."""
        for t in tiles:
            self._asked.add(t)
            yield t
        self._plan_done = True

    def tiles_for_entries(self) -> Iterator[tuple[int, int, int]]:
        """Hash tiles (level, index, width) a log sync needs (``verify.tile_plan``): the
        right edge, the consistency proofs' nodes, then the hashes of every full bundle."""
        return self._plan(ENTRIES_GOAL, lambda: V.tile_plan(self.trusted, self.checkpoint))

    def tiles_for_extension(self) -> Iterator[tuple[int, int, int]]:
        """Hash tiles proving only the root and the extension (no bundles follow)."""
        return self._plan(EXTENSION_GOAL, lambda: sorted(V.proof_tiles(self.trusted, self.checkpoint)))

    def tiles_for_head(self, header: SnapshotClaim) -> Iterator[tuple[int, int, int]]:
        """Hash tiles (at the checkpoint's size) proving snapshot ``header``'s head.
        A header outside the signed tree asks for none; ``prove_head`` refuses it."""
        plan = self._plan(HEAD_GOAL, lambda: sorted(head_tiles(header, self.checkpoint)))
        self._header = header
        return plan

    def add_tile(self, level: int, index: int, width: int, data: bytes) -> None:
        """Parse a hash tile this object asked for (``MalformedError`` if it does not parse)."""
        self._require("add_tile", TILES)
        key = (level, index, width)
        if key not in self._asked or (level, index) in self._tiles:
            why = "twice" if (level, index) in self._tiles else "without being asked for it"
            raise self._refuse(f"add_tile {tile_path(level, index, width)} {why}")

        def run():
            where = f"{self.origin} {tile_path(level, index, width)}"
            self._tiles[(level, index)] = parse_hash_tile(data, width, where)
        self._step(run)

    def _all_tiles_added(self, step: str) -> None:
        missing = len(self._asked) - len(self._tiles)
        if not self._plan_done or missing:
            what = "before the plan of tiles was read to its end" if not self._plan_done else \
                f"with {missing} asked-for tiles not added"
            raise self._refuse(f"{step} {what}")

    def prove_tiles(self) -> None:
        """The tiles hash to the signed root, and every full one to its entry
        one level up (``MalformedError`` otherwise)."""
        self._require("prove_tiles", TILES)
        if self._goal == HEAD_GOAL:
            raise self._refuse("prove_tiles: the tiles of a snapshot head are proven by prove_head")
        self._all_tiles_added("prove_tiles")

        def run():
            V.authenticate_tiles(self.checkpoint, self._tiles)
            self.state = PROVEN
        self._step(run)

    def prove_extension(self) -> list[tuple[int, list[bytes]]]:
        """With the proven tiles: the new tree contains every tree the mirror
        trusts (``ForkError`` otherwise). Returns the consistency proofs, as
        (old size, proof)."""
        self._require("prove_extension", PROVEN)

        def run():
            proofs = V.check_extends(self.trusted, self.checkpoint, self._tiles)
            self.state = EXTENDED
            return proofs
        return self._step(run)

    # ---- 3a. entries ---------------------------------------------------------------

    def bundles(self) -> Iterator[tuple[int, int]]:
        """Entry bundles (index, width) to fetch, in the order ``add_bundle`` takes them."""
        self._require("bundles", EXTENDED, goal=ENTRIES_GOAL)
        start, size = self.trusted.applied_size, self.checkpoint.size
        self._entries = V.EntryVerifier(start, size, self._tiles, self.trusted.version)
        self._expect = V.bundles(start, size)
        self.state = ENTRIES
        return ((i, w) for _, i, w in V.bundles(start, size))

    def add_bundle(self, index: int, width: int, data: bytes) -> list[V.Version | V.Spill]:
        """Verify the next bundle; return the versions it completes (apply each
        in one transaction, in order) and ``Spill``s of versions too big for
        memory (stage them)."""
        self._require("add_bundle", ENTRIES)
        _, want_index, want_width = next(self._expect, (None, None, None))
        if (index, width) != (want_index, want_width):
            want = "none (all were added)" if want_index is None else tile_path(-1, want_index, want_width)
            raise self._refuse(f"add_bundle {tile_path(-1, index, width)} out of order: the next is {want}")
        return self._step(self._entries.feed_bundle, index, width, data)

    def finish(self) -> Checkpoint:
        """Every bundle was added and the tree ends at a seal (``MalformedError``
        otherwise): the mirror now holds the checkpoint's tree."""
        self._require("finish", ENTRIES)
        nxt = next(self._expect, None)
        if nxt is not None:
            raise self._refuse(f"finish before every bundle was added: the next is {tile_path(-1, nxt[1], nxt[2])}")

        def run():
            self._entries.finish()
            self.state = DONE
            return self.checkpoint
        return self._step(run)

    # ---- 3b. a snapshot's head -------------------------------------------------------

    def prove_head(self) -> VerifiedHead:
        """Prove the snapshot header given to ``tiles_for_head`` (``MalformedError``,
        ``DigestError``); its records are then checked by the loader against
        the returned seal."""
        self._require("prove_head", TILES, goal=HEAD_GOAL)
        self._all_tiles_added("prove_head")

        def run():
            head = verify_head(self._header, self.origin, self.checkpoint, self._tiles)
            self.state = HEAD
            return head
        return self._step(run)
