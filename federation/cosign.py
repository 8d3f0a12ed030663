"""Timestamped cosignatures (c2sp.org/tlog-cosignature, Ed25519 type 0x04).

* ``Cosigner`` makes cosignatures: ``time`` || Ed25519 over
  ``"cosignature/v1\\ntime <T>\\n" || checkpoint note text``.
* ``WitnessClient`` asks a c2sp.org/tlog-witness for one (``add-checkpoint``).
* ``refresh_checkpoint`` is the publisher's step: take the feed's current
  log-signed checkpoint, collect fresh cosignatures from its own cosigner
  and its witnesses, and store the note with those signature lines added
  (compare-and-swap on the stored note, so a concurrent publish wins).
  ``refresh_forever`` runs it on a schedule even when nothing changed: each
  round renews the timestamps mirrors use to detect a frozen feed.

Cosigner key files use the signed-note private key format with type 0x04:
``PRIVATE+KEY+name+keyid+base64(0x04 || seed)``, mode 0600. The spec
requires a distinct key per cosigner and role; ``trust`` refuses a key used
both as a log key and as a witness key.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import FederationError, InputError, MalformedError, SignatureError, TransportError
from .merkle import consistency_proof
from .note import (MAX_COSIGNATURE_TIME, SIG_COSIGNATURE_V1, Note, NoteSignature, Verifier, check_key_name,
                   format_private_key, key_id, parse_note, parse_private_key)
from .tiles import TileHashes, needed_tiles, parse_hash_tile

log = logging.getLogger("federation.cosign")

SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_RESPONSE = 16 * 1024


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    """tlog-cosignature, "Ed25519 signed message"."""
    return b"cosignature/v1\ntime %d\n" % timestamp + text


class Cosigner:
    """An Ed25519 cosigner (witness or a publisher's own freshness key)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        self.name = check_key_name(name)
        self._key = private_key
        pub = private_key.public_key().public_bytes_raw()
        self.verifier = Verifier(name, key_id(name, SIG_COSIGNATURE_V1, pub), SIG_COSIGNATURE_V1, pub)

    @classmethod
    def generate(cls, name: str) -> "Cosigner":
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def cosign(self, text: bytes, timestamp: int | None = None) -> NoteSignature:
        """Cosign a checkpoint note text (with its final newline, no signatures)."""
        t = int(time.time()) if timestamp is None else timestamp
        if not 0 <= t <= MAX_COSIGNATURE_TIME:
            raise ValueError(f"cosignature timestamp {t} out of range")
        sig = t.to_bytes(8, "big") + self._key.sign(cosigned_message(text, t))
        return NoteSignature(self.name, self.verifier.key_id, sig)

    def private_key_text(self) -> str:
        return format_private_key(self.name, SIG_COSIGNATURE_V1, self._key.private_bytes_raw(), self.verifier.key_id)

    @classmethod
    def from_private_key_text(cls, text: str) -> "Cosigner":
        name, seed, hex_id = parse_private_key(text, SIG_COSIGNATURE_V1)
        c = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if f"{c.verifier.key_id:08x}" != hex_id:
            raise InputError("malformed cosigner key: key ID does not match the key")
        return c


def with_signatures(note: Note, extra: list[NoteSignature]) -> bytes:
    """``note`` with ``extra`` lines, replacing older lines by the same key."""
    replaced = {(s.name, s.key_id) for s in extra}
    kept = [s for s in note.signatures if (s.name, s.key_id) not in replaced]
    return Note(note.text, tuple(kept) + tuple(extra)).to_bytes()


# ---- tlog-witness client --------------------------------------------------------


def add_checkpoint_body(old_size: int, proof: list[bytes], note: bytes) -> bytes:
    """tlog-witness request body: old size line, proof lines, empty line, checkpoint."""
    lines = [f"old {old_size}\n".encode()] + [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + note


class WitnessConflict(Exception):
    """409 from a witness: it last cosigned ``size`` (None when it did not say)."""

    def __init__(self, size: int | None, text: str):
        super().__init__(text)
        self.size = size


@dataclass
class WitnessClient:
    """One witness: its submission prefix and the cosigner key we trust it with."""

    url: str
    key: Verifier
    session: aiohttp.ClientSession
    known_size: int = 0  # what we believe the witness last cosigned

    async def submit(self, note: bytes, old_size: int, proof: list[bytes]) -> NoteSignature:
        body = add_checkpoint_body(old_size, proof, note)
        url = self.url.rstrip("/") + "/add-checkpoint"
        try:
            async with self.session.post(url, data=body) as resp:
                text = (await resp.content.read(MAX_RESPONSE)).decode("utf-8", "replace")
                if resp.status == 409:
                    size = None
                    if resp.content_type == SIZE_CONTENT_TYPE and text.endswith("\n") and text[:-1].isdigit():
                        size = int(text[:-1])
                    raise WitnessConflict(size, text.strip())
                if resp.status != 200:
                    raise TransportError(f"POST {url}: HTTP {resp.status}: {text.strip()[:200]}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise TransportError(f"POST {url}: {type(e).__name__}: {e}") from e
        # tlog-witness: the client MAY append the response to the checkpoint and
        # verify it as a note with the witness keys it trusts.
        try:
            cosigned = parse_note(note + text.encode())
        except MalformedError as e:
            raise MalformedError(f"witness {self.key.name}: response is not signature lines: {e}") from None
        mine = [s for s in cosigned.signatures[len(parse_note(note).signatures):]
                if (s.name, s.key_id) == (self.key.name, self.key.key_id)]
        if not mine:
            raise SignatureError(f"witness {self.key.name} returned no cosignature by its key {self.key.vkey}")
        for s in mine:
            if not self.key.verify(cosigned.text, s.signature):
                raise SignatureError(f"witness {self.key.name} returned a cosignature that does not verify")
        return mine[-1]


# ---- publisher side --------------------------------------------------------------


def publisher_proof(publisher, feed, old: int, new: int) -> list[bytes]:
    """RFC 6962 consistency proof from ``old`` to ``new`` out of the publisher's tiles."""
    if old == 0 or old == new:
        return []

    def load(th: TileHashes) -> None:
        for lvl, idx, w in needed_tiles(new, lambda t: consistency_proof(old, new, t.mth)):
            data = publisher.tile(feed.id, lvl, idx, w)
            if data is None:
                raise MalformedError(f"publisher tile {lvl}/{idx}.p/{w} missing for a proof {old}->{new}")
            th.tiles[(lvl, idx)] = parse_hash_tile(data, w)

    th = TileHashes(new)
    load(th)
    return consistency_proof(old, new, th.mth)


async def cosign_with_witness(publisher, feed, note: bytes, client: WitnessClient) -> NoteSignature:
    """Get one witness's cosignature, learning its old size from a 409 once."""
    for _ in range(2):
        old = client.known_size if client.known_size <= feed.size else 0
        proof = await asyncio.to_thread(publisher_proof, publisher, feed, old, feed.size)
        try:
            sig = await client.submit(note, old, proof)
            client.known_size = feed.size
            return sig
        except WitnessConflict as e:
            if e.size is None or e.size > feed.size or e.size == client.known_size:
                why = ("it cosigned a different tree of that size (split view?)" if e.size == feed.size
                       else f"it cosigned size {e.size}, which this log cannot extend")
                raise FederationError(f"witness {client.key.name} refuses {feed.origin} size {feed.size} "
                                      f"(409): {why}") from None
            client.known_size = e.size
    raise FederationError(f"witness {client.key.name} keeps conflicting for {feed.origin}")


async def refresh_checkpoint(publisher, name: str, cosigners: list[Cosigner], witnesses: list[WitnessClient],
                             now: int | None = None) -> bytes | None:
    """Re-cosign feed ``name``'s current checkpoint and store it.

    Keeps the log's own signature lines, replaces every cosignature we
    collect. A witness that fails is logged and skipped (the others still
    count toward mirrors' quorum). Returns the stored note, or None when a
    publish replaced the checkpoint meanwhile (the next round cosigns it).
    """
    feed = publisher.feed(name)
    note = parse_note(feed.checkpoint)
    log_key = feed.vkey.split("+")
    base = Note(note.text, tuple(s for s in note.signatures
                                 if s.name == log_key[0] and f"{s.key_id:08x}" == log_key[1]))
    base_bytes = base.to_bytes()
    t = int(time.time()) if now is None else now
    sigs = [c.cosign(base.text, t) for c in cosigners]
    results = await asyncio.gather(*(cosign_with_witness(publisher, feed, base_bytes, w) for w in witnesses),
                                   return_exceptions=True)
    for w, r in zip(witnesses, results):
        if isinstance(r, BaseException):
            if not isinstance(r, (FederationError, ValueError)):
                raise r
            log.warning("%s: no cosignature from witness %s: %s", name, w.key.name, r)
        else:
            sigs.append(r)
    new = with_signatures(base, sigs)
    return new if await asyncio.to_thread(publisher.replace_checkpoint, name, feed.checkpoint, new) else None


async def refresh_forever(publisher, names: list[str], cosigners: list[Cosigner], witnesses: list[WitnessClient],
                          interval: float, stop: asyncio.Event | None = None) -> None:
    """Refresh every feed's cosignatures every ``interval`` seconds until ``stop``."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        for name in names:
            try:
                await refresh_checkpoint(publisher, name, cosigners, witnesses)
            except FederationError as e:
                log.warning("%s: cosignature refresh failed: %s", name, e)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
