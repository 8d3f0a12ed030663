"""A relay: re-serve followed feeds byte-for-byte from a mirror's verified data.

``RelaySource`` is a ``server.FeedSource`` over a mirror database. It serves

* the checkpoint: the exact signed note (with every cosignature) that the
  mirror verified and whose size equals the mirror's applied size
  (``follows.checkpoint``), never one it has not applied;
* tiles and entry bundles: the mirror's ``tiles`` rows, which it rebuilt
  from verified entries. Tiles are a pure function of the tree, so these are
  the origin's bytes.

Invariant: a relay never signs or rewrites anything. A client of the relay
verifies against the origin publisher's key exactly as it would against the
origin, so a relay that tampers, withholds or rolls back is caught by the
client, not trusted.

While the mirror applies a multi-version catch-up, ``follows.checkpoint``
keeps the last complete checkpoint (the intermediate sizes have no signed
note): every tile of that smaller tree is still in the table (tiles are
never deleted), so it remains a complete, verifiable view.
"""
from __future__ import annotations

from federation.core.checkpoint import parse_checkpoint_body
from federation.core.note import parse_note
from federation.net.server import TableSource
from federation.store.mirror import follow_checkpoint, follow_id, served_follows


class RelaySource(TableSource):
    """Serves the followed feeds ``names`` (all when None) of a mirror DB."""

    feed_id = staticmethod(follow_id)

    def names(self) -> list[dict]:
        """Served state, as ``checkpoint`` serves it: during a catch-up the
        mirror has applied more than its served checkpoint covers; the size
        is then the checkpoint's and the version unknown here."""
        out = []
        for n, o, v, applied, ver, cp in served_follows(self.conn):
            if not self._allowed(n):
                continue
            size = parse_checkpoint_body(parse_note(cp).text).size if cp is not None else 0
            out.append(dict(name=n, origin=o, vkey=v.split("\n")[0], size=size,
                            version=ver if size == applied else None, relay=True))
        return out

    def checkpoint(self, name: str) -> bytes | None:
        if self._id(name) is None:
            return None
        row = follow_checkpoint(self.conn, name)
        return row[1] if row else None
