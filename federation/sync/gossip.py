"""Gossip check: compare this mirror's checkpoint with another node's.

``federation verify --against URL`` fetches the other node's checkpoint for
the same feed (any tlog-tiles prefix: the publisher, a relay, another
member's mirror), checks it is signed by a log key this mirror trusts, and
then either proves the two trees consistent with an RFC 6962 consistency
proof, or reports a fork carrying both signed notes as evidence: two notes
signed by the same log that cannot both be true prove misbehaviour to anyone.

The proof for a smaller remote tree is built from this mirror's own stored
tiles; for a larger one, the remote's checkpoint goes through the same
``acceptance.Acceptance`` as a sync, with this mirror's checkpoint as the
trusted tree: its tiles (fetched by the one ``TileFetcher``) are proven
against its own signed root, then the consistency proof from them against
both roots, so the remote's tiles need no trust. Nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass

from federation.core.acceptance import Acceptance
from federation.core.checkpoint import Checkpoint, parse_checkpoint_body
from federation.core.errors import ForkError, InputError, MalformedError
from federation.core.layout import tile_path
from federation.core.merkle import consistency_proof, verify_consistency
from federation.core.note import MAX_NOTE_BYTES, parse_note, parse_vkey
from federation.core.tiles import TileHashes, needed_tiles, parse_hash_tile
from federation.net.fetcher import Fetcher
from federation.store.tilestore import TileStore
from federation.sync.tilefetcher import TileFetcher


class SplitViewError(ForkError):
    """Two signed checkpoints of one log that cannot both be true; both notes attached."""

    def __init__(self, message: str, ours: bytes, theirs: bytes):
        super().__init__(message)
        self.ours = ours
        self.theirs = theirs

    def evidence(self) -> str:
        return ("--- this mirror's checkpoint ---\n" + self.ours.decode() +
                "--- the other node's checkpoint ---\n" + self.theirs.decode())


@dataclass(frozen=True)
class GossipResult:
    ours: Checkpoint
    theirs: Checkpoint
    proof: list[bytes]  # consistency proof from the smaller tree to the larger one

    def describe(self) -> str:
        if self.ours.size == self.theirs.size:
            return f"consistent: both nodes hold {self.ours.origin} size {self.ours.size} with the same root"
        small, big = sorted((self.ours, self.theirs), key=lambda c: c.size)
        who = "the other node" if big is self.theirs else "this mirror"
        return (f"consistent: {self.ours.origin} size {small.size} is a prefix of size {big.size} held by {who} "
                f"(RFC 6962 consistency proof of {len(self.proof)} hashes verified)")


def _local_proof(store: TileStore, old: int, new: int) -> list[bytes]:
    th = TileHashes(new)
    for lvl, idx, w in needed_tiles(new, lambda t: consistency_proof(old, new, t.mth)):
        data = store.get(lvl, idx, w)
        if data is None:
            raise InputError(f"mirror tile {tile_path(lvl, idx, w)} missing; run 'federation verify' to audit")
        th.tiles[(lvl, idx)] = parse_hash_tile(data, w)
    return consistency_proof(old, new, th.mth)


async def verify_against(mirror, name: str, url: str, fetcher: Fetcher | None = None) -> GossipResult:
    """Prove this mirror's view of ``name`` consistent with the node at ``url``.

    Raises ``SplitViewError`` (a fork, with both notes), ``SignatureError``
    (the other node's checkpoint is not signed by a trusted log key),
    ``MalformedError`` (its tiles do not hash to its own signed root) or
    ``TransportError``.
    """
    f = mirror.get(name)
    ours_note = f.checkpoint
    if ours_note is None:
        raise InputError(f"feed {name} has no applied checkpoint yet; sync first")
    ours = parse_checkpoint_body(parse_note(ours_note).text)
    own = fetcher is None
    fetcher = fetcher or Fetcher([url])
    try:
        if own:
            await fetcher.__aenter__()
        raw = await fetcher.get("checkpoint", MAX_NOTE_BYTES)
        # The other node's checkpoint is accepted as a sync would, with this
        # mirror's checkpoint as the only tree trusted (nothing is applied).
        acc = Acceptance.of_peer(f.origin, [parse_vkey(k) for k in f.vkeys], ours)
        theirs = acc.open_checkpoint(raw).checkpoint

        def fork(why: str) -> SplitViewError:
            return SplitViewError(f"{f.origin}: {why}: this mirror has size {ours.size} root {ours.root.hex()[:16]}..., "
                                  f"{url} has size {theirs.size} root {theirs.root.hex()[:16]}...", ours_note, raw)

        if theirs.size == ours.size:
            if theirs.root != ours.root:
                raise fork("two signed roots for the same size")
            return GossipResult(ours, theirs, [])
        if theirs.size < ours.size:
            proof = _local_proof(TileStore(mirror.conn, f.id), theirs.size, ours.size)
            if not verify_consistency(theirs.size, ours.size, theirs.root, ours.root, proof):
                raise fork("the other node's tree is not a prefix of this mirror's verified tree")
            return GossipResult(ours, theirs, proof)
        # A larger tree: its tiles must hash to its own signed root (else they
        # are bad bytes, no evidence of a fork), and then prove that it
        # extends ours (else two signed trees cannot both be true).
        acc.accept_checkpoint()
        async for (lvl, idx, w), data in TileFetcher(fetcher).hash_tiles(acc.tiles_for_extension()):
            acc.add_tile(lvl, idx, w, data)
        try:
            acc.prove_tiles()
        except MalformedError as e:
            raise MalformedError(f"{url}: hash tiles do not hash to its own signed root of size {theirs.size}; "
                                 f"cannot compare (no evidence of a fork): {e}") from None
        try:
            proofs = acc.prove_extension()
        except ForkError:
            raise fork("this mirror's tree is not a prefix of the other node's signed tree") from None
        return GossipResult(ours, theirs, proofs[0][1] if proofs else [])  # none from an empty tree
    finally:
        if own:
            await fetcher.close()
