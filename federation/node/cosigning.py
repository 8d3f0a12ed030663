"""Running a feed's stored cosigning configuration: key files in, a round out.

``trust.cosign`` does a round with cosigners and witness clients it is
given (injected signers); this module is the node-level shell that loads
the configured cosigner key files (``node.keys``, the only reader of key
files), makes the witness clients, and runs one round on its own publisher
connection, so a round that waits on slow witnesses never holds a
connection (or a lock) that a publish needs.
"""
from __future__ import annotations

from pathlib import Path

import aiohttp

from federation.core.note import parse_vkey
from federation.node.keys import load_cosigner
from federation.store.publisher import Publisher
from federation.store.trust_chain import TrustChain
from federation.trust.cosign import CosignOutcome, CosigningConfig, cosign_feed, load_config
from federation.trust.witness_client import WitnessClient

ROUND_TIMEOUT = 30.0  # seconds for every witness's answer in one round


def plan(config: CosigningConfig, session: aiohttp.ClientSession, trust_quorum: int | None = None):
    """(cosigners, witness clients, quorum) of a stored configuration. A
    configuration without its own quorum takes the feed's trust file's
    (``trust_quorum``), read at each round, so a rotation that changes it
    applies at once; without a trust file, every cosigner."""
    cosigners = [load_cosigner(Path(k)) for k in config.keys]
    clients = [WitnessClient(u, parse_vkey(v), session) for u, v in config.witnesses]
    return cosigners, clients, config.resolved_quorum(trust_quorum)


async def cosign_configured(publisher_db: Path | str, name: str,
                            timeout: float = ROUND_TIMEOUT) -> CosignOutcome | None:
    """One cosigning round for ``name`` with its stored configuration
    (``cosign configure``), on a publisher connection of its own; None when
    the feed has none. Used right after a publish (CLI and publishing API) to
    serve a pending checkpoint."""
    publisher = Publisher(publisher_db)
    try:
        cfg = load_config(publisher, name)
        if cfg is None:
            return None
        trust = TrustChain(publisher.conn, name).current()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            return await cosign_feed(publisher, name, *plan(cfg, session, trust.quorum if trust else None))
    finally:
        publisher.close()
