"""Keeping quiet feeds fresh: re-stamp the served checkpoints (the I/O shell).

A mirror calls a feed ``stale`` once the newest verified timestamp on its
checkpoint is older than its maximum age (``freshness``), so a publisher
must renew the log's own timestamp while nothing is published. Three ways,
all through ``Publisher.refresh_timestamp`` (compare-and-swap on the served
note; a concurrent publish or cosigning round wins and is stamped anyway):

* ``federation feed refresh`` -- once, for cron or a systemd timer;
* ``federation serve`` / ``serve --config`` -- ``refresh_task`` every
  ``REFRESH_INTERVAL`` seconds for each published feed whose key it holds;
* ``federation export --watch`` -- before each export round that is due.

Each feed is stamped with the key file it is signed with (``Home.feed_key``:
the one ``feed create --key`` or ``feed rotate-key`` recorded, else
``HOME/private/NAME.key``). A feed whose key is not on this machine is
reported, not refreshed: its mirrors go stale after their maximum age unless
a refresh runs where the key is (``feed refresh --key``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from federation.core.errors import FederationError
from federation.core.freshness import REFRESH_INTERVAL
from federation.node.home import Home
from federation.node.keys import load_signer
from federation.store.db import connect
from federation.store.publisher import feed_key_files
from federation.store.publisher import Publisher

log = logging.getLogger("federation.refresh")


@dataclass(frozen=True)
class Refreshed:
    feed: str
    size: int | None  # the tree re-stamped (None: not refreshed, or not up to now)
    problem: str = ""  # why not


def load_refresh_signers(home: Home, names: list[str], keys: dict[str, Path] | None = None) -> tuple[dict, list]:
    """({name: Signer} for the feeds whose key file loads, [Refreshed] for those whose does not).

    Each feed's key file: ``keys[name]`` if given (a node config's ``key``,
    ``feed refresh --key``), else the one the feed is signed with as the home
    records it (``Home.feed_key``: ``feed create --key`` and ``feed
    rotate-key`` record theirs; ``HOME/private/NAME.key`` otherwise).
    """
    recorded = recorded_key_files(home)
    signers, missing = {}, []
    for name in names:
        path = (keys or {}).get(name) or home.feed_key(name, recorded.get(name))
        try:
            signers[name] = load_signer(path)
        except FederationError as e:
            missing.append(Refreshed(name, None, f"no usable key: {e}"))
    return signers, missing


def recorded_key_files(home: Home) -> dict[str, str | None]:
    """Feed name -> its recorded key file, read only (none without a publisher database)."""
    if not home.publisher_db.exists():
        return {}
    conn = connect(home.publisher_db, readonly=True)
    try:
        return feed_key_files(conn)
    finally:
        conn.close()


def refresh_feeds(publisher, signers: dict, now: int | None = None) -> list[Refreshed]:
    """Re-stamp the served checkpoint of every feed in ``signers`` (name -> Signer).

    A feed with a version pending cosignatures is reported as a problem: its
    checkpoint is stamped only up to that version's commit.
    """
    out = []
    for name, signer in signers.items():
        try:
            note = publisher.refresh_timestamp(name, signer, now)
        except FederationError as e:
            out.append(Refreshed(name, None, f"{e.kind}: {e}"))
            continue
        feed = publisher.feed(name)
        if note is None:
            out.append(Refreshed(name, None, "the checkpoint changed meanwhile (a publish); the next round stamps it"))
        elif feed.pending_checkpoint is not None:
            # Stamped only up to the pending version's commit (Publisher.refresh_timestamp).
            out.append(Refreshed(name, None, f"version {feed.version} awaits cosignatures since "
                                             f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(feed.updated))}: "
                                             "the served checkpoint is stamped as of then, not now, and mirrors "
                                             f"go stale after their maximum age; finish it with 'federation "
                                             f"cosign run {name} --once'"))
        else:
            out.append(Refreshed(name, feed.size))
    return out


def refresh_task(publisher_db: Path, signers: dict, interval: float = REFRESH_INTERVAL):
    """A ``cleanup_ctx`` for an aiohttp app: refresh at start-up and every
    ``interval`` seconds until the app stops. Failures are logged and retried
    next round; the task never dies of them."""
    async def ctx(app):
        async def loop():
            while True:
                try:
                    pub = Publisher(publisher_db)
                    try:
                        results = await asyncio.to_thread(refresh_feeds, pub, signers)
                    finally:
                        pub.close()
                    for r in results:
                        if r.problem:
                            log.warning("feed %s: checkpoint not refreshed: %s", r.feed, r.problem)
                        else:
                            log.info("feed %s: checkpoint of size %d re-stamped", r.feed, r.size)
                except Exception:  # noqa: BLE001 -- a refresh round must not end the loop
                    log.exception("refreshing checkpoints failed; retrying in %.0f s", interval)
                await asyncio.sleep(interval)

        task = asyncio.create_task(loop(), name="refresh checkpoints") if signers and interval > 0 else None
        yield
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    return ctx
