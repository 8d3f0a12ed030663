"""The publisher's c2sp.org/tlog-witness client: ask a witness to cosign.

``WitnessClient.submit`` posts one ``add-checkpoint`` request and returns
the witness's cosignature line, verified against the key we trust it with;
``cosign_with_witness`` adds the consistency proof from the size the witness
last cosigned (learnt from a 409 once) out of the publisher's tiles. Answers
are read whole but bounded (``MAX_RESPONSE``); everything that goes wrong is
one of our errors: ``TransportError`` (no answer, HTTP error; ``Unreachable``
when no connection was made, so the witness saw nothing),
``MalformedError``/``SignatureError`` (a bad answer), ``ForkError`` /
``RollbackError`` (the witness saw a different or bigger tree).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from federation.core.errors import (SIZE_CONTENT_TYPE, ForkError, MalformedError, RollbackError, SignatureError,
                                    TransportError, Unreachable, WitnessConflict)
from federation.core.merkle import consistency_proof
from federation.core.note import NoteSignature, Verifier, parse_note
from federation.core.tiles import TileHashes, needed_tiles, parse_hash_tile
from federation.core.witnessformat import add_checkpoint_body, witness_size

MAX_RESPONSE = 16 * 1024


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body (however many pieces it arrives in), or ``MalformedError`` past ``limit``."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(4096):
        body += chunk
        if len(body) > limit:
            raise MalformedError(f"{resp.url}: answer over {limit} bytes")
    return bytes(body)


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
                text = (await _read_bounded(resp, MAX_RESPONSE)).decode("utf-8", "replace")
                if resp.status == 409:
                    size = None
                    if resp.content_type == SIZE_CONTENT_TYPE and text.endswith("\n"):
                        size = witness_size(text[:-1])
                    raise WitnessConflict(text.strip(), size)  # 409: it last cosigned ``size``
                if resp.status != 200:
                    raise TransportError(f"POST {url}: HTTP {resp.status}: {text.strip()[:200]}")
        except aiohttp.ClientConnectorError as e:
            raise Unreachable(f"POST {url}: {type(e).__name__}: {e}") from e  # the witness saw nothing
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
            if e.size is not None and e.size > feed.size:
                # The witness saw a bigger tree of this log than the publisher
                # holds: a restored older database, or a fork.
                raise RollbackError(f"witness {client.key.name} refuses {feed.origin} size {feed.size} (409): it "
                                    f"cosigned size {e.size}, which this log cannot extend") from None
            if e.size is None or e.size == client.known_size:
                why = ("it cosigned a different tree of that size (split view?)" if e.size == feed.size
                       else "it did not say which size it last cosigned" if e.size is None
                       else f"it keeps naming size {e.size}")
                raise ForkError(f"witness {client.key.name} refuses {feed.origin} size {feed.size} (409): {why}") \
                    from None
            client.known_size = e.size
    raise TransportError(f"witness {client.key.name} keeps conflicting for {feed.origin}")
