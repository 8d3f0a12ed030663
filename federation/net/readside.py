"""What every serving node adds to the tlog-tiles read side.

One place, so ``federation serve`` and ``federation serve --config`` expose
the same routes: long-poll on the checkpoint (``longpoll``), the signed trust
chain (``rotation``: ``/feeds/NAME/trust/...``), and snapshots plus the
refusal of pruned bundles (``net.snapshots``), for published feeds and for
relayed ones.
"""
from __future__ import annotations

from pathlib import Path


def read_side(publisher_db: Path | None, mirror_db: Path | None = None,
              relayed: list[str] | None = None, published: list[str] | None = None) -> tuple[list, list]:
    """(extensions, middlewares) for ``server.create_app``.

    ``published`` / ``relayed``: the feeds of ``publisher_db`` / ``mirror_db``
    this node serves (all when None); their snapshots, minimum indexes and
    trust chains are offered too, and no other feed's.
    """
    from federation.net import longpoll
    from federation.trust.rotation import install_trust_routes
    from federation.net.snapshots import server_extension

    pairs = [(p, n) for p, n in ((publisher_db, published), (mirror_db, relayed)) if p is not None]
    extensions = [longpoll.install, install_trust_routes([p for p, _ in pairs], [n for _, n in pairs])]
    if publisher_db is not None:
        extensions.append(server_extension(publisher_db, names=published))
    if mirror_db is not None:
        extensions.append(server_extension(mirror_db, mirror=True, names=relayed))
    return extensions, [longpoll.longpoll_middleware]
