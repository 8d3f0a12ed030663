"""A C2SP tlog-witness (https://c2sp.org/tlog-witness): ``POST add-checkpoint``.

A witness keeps, per log origin it is configured for, the latest checkpoint
it cosigned, and cosigns a new one only if a consistency proof shows it
extends that one. Member platforms running witnesses for the clearinghouse's
feeds is what makes a split view detectable: a mirror requires cosignatures
from a quorum of them (``trust.check_cosignatures``).

``Witness.add_checkpoint(body)`` is the whole protocol: request bytes in,
cosignature lines out, or a ``WitnessRefusal`` (``core.errors``) whose class
names why and carries the spec's status code; ``net.errors`` answers it.
Checks, in the spec's order::

    body does not parse                          400 BadWitnessRequest
    origin unknown                               404 UnknownLog
    no signature by a trusted log key verifies   403 UntrustedCheckpoint
    old size > checkpoint size                   400 BadWitnessRequest
    old size != latest cosigned size             409 WitnessConflict (body: that size, text/x.tlog.size)
    consistency proof does not verify            422 InconsistentCheckpoint
    same size, different root                    409 WitnessConflict (body: the latest size)
    otherwise: persist, then cosign              200

Check-and-persist is atomic: one ``BEGIN IMMEDIATE`` transaction, and the
update is ``UPDATE ... WHERE origin=? AND size=?`` (an ``INSERT`` for a first
checkpoint; ``store.witness.WitnessStore.advance``), so a concurrent request
that moved the state first makes this one a 409 instead of a rollback (the
race the spec describes). The cosignature is made only after the commit.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from aiohttp import web

from federation.core.checkpoint import parse_checkpoint_body
from federation.store.db import write_txn
from federation.store.witness import WitnessStore
from federation.core.errors import (BadWitnessRequest, InconsistentCheckpoint, InputError, MalformedError,
                                    SignatureError, UnknownLog, UntrustedCheckpoint, WitnessConflict,
                                    WitnessRefusal)
from federation.net.httpserver import read_body
from federation.core.merkle import EMPTY_ROOT, verify_consistency
from federation.core.note import Cosigner, open_note, parse_vkey
from federation.core.witnessformat import MAX_BODY, parse_request

log = logging.getLogger("federation.witness")

class Witness(WitnessStore):
    """Witness state in SQLite (``store.witness``) and its cosigner key (injected)."""

    def __init__(self, path: Path | str, cosigner: Cosigner, clock=time.time):
        super().__init__(path)
        self.cosigner = cosigner
        self.clock = clock

    def add_log(self, origin: str, vkeys: list[str]) -> None:
        """Configure (or reconfigure) the log keys the witness accepts for ``origin``."""
        if not vkeys:
            raise InputError("at least one log vkey is needed")
        for v in vkeys:
            if parse_vkey(v).name != origin:
                raise InputError(f"log key {v} is not named after the origin {origin!r}")
        self.set_log(origin, vkeys)

    def _evidence(self, origin: str, status: int, reason: str, body: bytes) -> None:
        # tlog-witness: the witness MAY log a refused request with a valid
        # signature, as it might be proof of log misbehaviour.
        self.record_evidence(origin, status, reason, body, int(self.clock()))

    def add_checkpoint(self, body: bytes) -> bytes:
        """The add-checkpoint call: request body in, cosignature lines out."""
        old, proof, note_bytes = parse_request(body)
        try:
            text = note_bytes[: note_bytes.rindex(b"\n\n") + 1]
            cp = parse_checkpoint_body(text)
        except (ValueError, MalformedError) as e:
            raise BadWitnessRequest(f"checkpoint does not parse: {e}") from None
        vkeys = self.log_keys(cp.origin)
        if vkeys is None:
            raise UnknownLog(f"unknown log origin {cp.origin!r}")
        try:
            note = open_note(note_bytes, [parse_vkey(v) for v in vkeys])
        except SignatureError as e:
            raise UntrustedCheckpoint(f"checkpoint for {cp.origin}: {e}") from None
        except MalformedError as e:
            raise BadWitnessRequest(f"checkpoint for {cp.origin}: {e}") from None
        if old > cp.size:
            raise BadWitnessRequest(f"old size {old} is larger than the checkpoint size {cp.size}")
        evidence: list[tuple[int, str, bytes]] = []
        try:
            now = self._check_and_persist(cp, old, proof, body, note_bytes, evidence)
        except WitnessRefusal:
            # Written after the rollback, so the refusal's evidence survives it.
            for status, reason, data in evidence:
                self._evidence(cp.origin, status, reason, data)
            raise
        # Persisted before responding (spec); sign only what is now recorded.
        return self.cosigner.cosign(note.text, now).line()

    def _check_and_persist(self, cp, old: int, proof: list[bytes], body: bytes, note_bytes: bytes,
                           evidence: list) -> int:
        with write_txn(self.conn):
            latest = self.latest(cp.origin)
            size, root = latest if latest else (0, EMPTY_ROOT)
            if old != size:
                raise WitnessConflict(f"old size {old} is not the latest cosigned size {size}", size)
            if old == 0 and proof:
                raise BadWitnessRequest("the consistency proof must be empty when the old size is 0")
            if old == cp.size:
                if cp.root != root:
                    evidence.append((409, "same size, different root", note_bytes))
                    raise WitnessConflict(f"checkpoint of size {cp.size} has a different root from the one "
                                          "cosigned before (split view)", size)
            elif old and not verify_consistency(old, cp.size, root, cp.root, proof):
                evidence.append((422, f"no consistency proof from {old}", body))
                raise InconsistentCheckpoint(f"consistency proof from size {old} to {cp.size} does not verify")
            now = int(self.clock())
            if not self.advance(cp.origin, None if latest is None else old, cp.size, cp.root, note_bytes, now):
                raise WitnessConflict("a concurrent request cosigned first")
        return now


WITNESS = web.AppKey("witness", Witness)


def install_witness(witness: Witness, prefix: str = "/witness"):
    """Server extension: ``POST <prefix>/add-checkpoint``."""

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await read_body(request, MAX_BODY)  # 413 over the limit, 408 if trickled
        try:
            # The SQLite transaction is short and local; keeping it on the loop
            # serialises requests per witness, which the atomic check needs anyway.
            lines = request.app[WITNESS].add_checkpoint(body)
        except WitnessRefusal as e:  # answered by net.errors, with the spec's status
            log.info("add-checkpoint refused (%d): %s", e.status, e)
            raise
        return web.Response(body=lines, content_type="text/plain", charset="utf-8")

    def install(app: web.Application) -> None:
        app[WITNESS] = witness
        app.router.add_post(prefix.rstrip("/") + "/add-checkpoint", add_checkpoint)

    return install
