"""A node's assembly: its config (``node.config``) in, one aiohttp app out.

``build_app`` wires the parts of ``federation serve --config``:

* read side: ``server.create_app`` over the publisher DB and, for followed
  feeds with ``relay = true``, a ``relay.RelaySource`` over the mirror DB,
  plus what every serving node adds (``read_side``: long-poll, the trust
  chain, snapshots and the refusal of pruned bundles);
* access control (``auth``) as the outermost middleware, then long-poll
  (``longpoll``), so an unauthenticated request is never held;
* the publishing API (``publish_api``) for published feeds with ``api``,
  its cosigning round injected (``node.cosigning``);
* the feedback API (``feedback_api``) for every published feed: members
  report on its hashes with their member tokens;
* one follower task per followed feed (``follower.watch_feed``) in
  ``cleanup_ctx``: started with the app, cancelled on shutdown. Each has its
  own mirror connection, because a SQLite connection holds one transaction;
* the re-stamping of published checkpoints (``node.refresh``);
* with ``[platform]``, the platform API (``platform.node.PlatformAPI``:
  lookup, change stream, webhooks, metrics) over the same mirror. The
  followers are its one sync loop: each round is counted in ``/metrics``
  and a change wakes the webhooks. One auth middleware decides every
  request (``platform.auth.node_gate``), with the node's own tokens; the
  metrics middleware sits outside it, so refusals are counted.

``build_publisher_app`` is plain ``federation serve``: the same read side,
access control and feedback API over a publisher database, without a config.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from federation.core.errors import InputError
from federation.core.freshness import DEFAULT_MAX_AGE, REFRESH_INTERVAL
from federation.net import longpoll
from federation.net.access import StoredAccess, combine
from federation.net.auth import AccessControl, install_listing_filter
from federation.net.feedback_api import REPORT_RATE, FeedbackAPI
from federation.net import httpserver
from federation.net.publish_api import PublishAPI
from federation.net.relay import RelaySource
from federation.net.server import PublisherSource, create_app
from federation.net.snapshots import server_extension
from federation.node.config import FollowedFeed, NodeConfig, trust_file, with_recorded_tokens
from federation.node.cosigning import cosign_configured
from federation.node.home import Home
from federation.node.keys import load_signer
from federation.node.refresh import load_refresh_signers, recorded_key_files, refresh_task
from federation.node.status import install_node_status
from federation.platform.auth import PlatformAuth, node_gate
from federation.platform.node import PlatformAPI
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.store.tokens import TokenStore
from federation.store.trust_chain import TrustChain
from federation.sync import follower
from federation.trust.rotation import follow_with_trust, install_trust_routes

log = logging.getLogger("federation.node")

NODE_STATES = web.AppKey("node_follow_states", dict)
NODE_PLATFORM = web.AppKey("node_platform", PlatformAPI)


def read_side(publisher_db: Path | None, mirror_db: Path | None = None,
              relayed: list[str] | None = None, published: list[str] | None = None) -> tuple[list, list]:
    """(extensions, middlewares) for ``server.create_app``.

    ``published`` / ``relayed``: the feeds of ``publisher_db`` / ``mirror_db``
    this node serves (all when None); their snapshots, minimum indexes and
    trust chains are offered too, and no other feed's.
    """
    pairs = [(p, n) for p, n in ((publisher_db, published), (mirror_db, relayed)) if p is not None]
    extensions = [longpoll.install, install_trust_routes([p for p, _ in pairs], [n for _, n in pairs])]
    if publisher_db is not None:
        extensions.append(server_extension(publisher_db, names=published))
    if mirror_db is not None:
        extensions.append(server_extension(mirror_db, mirror=True, names=relayed))
    return extensions, [longpoll.longpoll_middleware]


def upstream_headers(f: FollowedFeed) -> dict | None:
    if f.token_env is None:
        return None
    token = os.environ.get(f.token_env)
    if not token:
        raise InputError(f"[[follow]] {f.name}: environment variable {f.token_env} (its upstream token) is not set")
    return {"Authorization": f"Bearer {token}"}


def prepare_mirror(home: Home, cfg: NodeConfig) -> None:
    """Make the mirror's follows match the config (the config is the truth).

    A ``[[follow]]`` with a trust file is followed under it, with or without
    ``vkeys`` next to it: its chain is started (``rotation.follow_with_trust``
    for a new follow; the file itself for a feed followed before without
    one), so every sync checks the witness quorum and follows rotations, and
    ``max_age`` defaults to the file's ``max_staleness_seconds``. The trusted
    log keys are then the config's ``vkeys`` plus the chain's *current* ones
    (not the file's: rotations may have moved past it, and a key a rotation
    revoked must not come back at the next start).
    """
    if not cfg.follow:
        return
    mirror = Mirror(home.mirror_db)
    try:
        for f in cfg.follow:
            trust = trust_file(f)
            try:
                have = mirror.get(f.name)
            except InputError:
                if trust is None:
                    mirror.follow(f.name, f.origin, list(f.vkeys), list(f.urls), f.max_age or DEFAULT_MAX_AGE)
                    continue
                # The chain first, then the follow row (follow_with_trust's order);
                # the config's own vkeys are added below.
                have = follow_with_trust(mirror, f.name, trust, list(f.urls), f.max_age)
            if have.origin != f.origin:
                raise InputError(f"[[follow]] {f.name}: the mirror follows origin {have.origin!r}, config says "
                                 f"{f.origin!r}; follow it under a new name")
            vkeys = list(f.vkeys)
            if trust is not None:
                chain = TrustChain(mirror.conn, f.name)
                if chain.current() is None:  # followed before without a trust file: under it from now on
                    chain.start(trust)
                vkeys += [k.vkey for k in chain.current().log_keys if k.vkey not in vkeys]
            if list(have.vkeys) != vkeys or list(have.urls) != list(f.urls):
                mirror.set_upstreams(f.name, vkeys, list(f.urls))
            if f.max_age is not None and f.max_age != have.max_age:
                mirror.set_max_age(f.name, f.max_age)
    finally:
        mirror.close()


def load_signers(home: Home, cfg: NodeConfig) -> dict:
    """The publishing API's signers: each feed's ``key``, else the key file the
    feed is signed with (``Home.feed_key``)."""
    recorded = recorded_key_files(home)
    return {p.name: load_signer(p.key or home.feed_key(p.name, recorded.get(p.name))) for p in cfg.publish if p.api}


def recorded_token_envs(home: Home) -> dict[str, str | None]:
    """Followed feed -> the variable its member token is read from, as this
    home's mirror records it (``follow --token-env``); {} without a mirror."""
    if not home.mirror_db.exists():
        return {}
    mirror = Mirror.existing(home.mirror_db)
    try:
        return {f.name: f.token_env for f in mirror.all()}
    finally:
        mirror.close()


def build_app(cfg: NodeConfig, home: Home, signers: dict | None = None, on_sync=None) -> web.Application:
    """The node's app. ``signers`` (name -> Signer) defaults to the key files;
    ``on_sync(name, SyncResult)`` is called after each sync that applied something.
    A feed the mirror already fetches with a member token stays members-only
    whatever ``cfg`` omits (``config.with_recorded_tokens``)."""
    cfg = with_recorded_tokens(cfg, recorded_token_envs(home))

    stored = {}
    if cfg.publish:
        pub = Publisher(home.publisher_db)  # creates the schema if new
        stored = {f.name: f.access for f in pub.feeds() if any(p.name == f.name for p in cfg.publish)}
        have = set(stored)
        pub.close()
        missing = [p.name for p in cfg.publish if p.name not in have]
        if missing:
            raise InputError(f"published feed(s) {missing} do not exist in {home.publisher_db}; "
                             "create them with 'federation feed create'")
    access = combine(cfg.access(), stored)  # refuses a config that opens a members-only feed
    prepare_mirror(home, cfg)
    signers = load_signers(home, cfg) if signers is None else signers
    headers = {f.name: upstream_headers(f) for f in cfg.follow}

    sources = []
    if cfg.publish:
        sources.append(PublisherSource(home.publisher_db, [p.name for p in cfg.publish]))
    relayed = [f.name for f in cfg.follow if f.relay]
    if relayed:
        sources.append(RelaySource(home.mirror_db, relayed))
    store = TokenStore(home.auth_db)
    live = StoredAccess(home.publisher_db, [p.name for p in cfg.publish]) if cfg.publish else None
    ac = AccessControl(store, access, anonymous_rate=cfg.anonymous_rate,
                       anonymous_burst=cfg.anonymous_burst, stored=live)
    extensions, readside_middlewares = read_side(home.publisher_db if cfg.publish else None,
                                                 home.mirror_db if relayed else None, relayed,
                                                 published=[p.name for p in cfg.publish])
    api_signers = {n: s for n, s in signers.items() if any(p.name == n and p.api for p in cfg.publish)}
    if api_signers:
        async def after_publish(name: str):
            return await cosign_configured(home.publisher_db, name)

        extensions.append(PublishAPI(home.publisher_db, api_signers, cfg.max_batch_bytes, audit=store,
                                     after_publish=after_publish).install)

    if cfg.publish:
        extensions.append(FeedbackAPI(home.publisher_db, store, [p.name for p in cfg.publish]).install)

    states = {f.name: follower.FollowState(f.name) for f in cfg.follow}
    api = PlatformAPI(home.mirror_db, home.platform_db, cfg.platform.threshold) if cfg.platform else None
    if api is not None:
        extensions += api.extensions(count_requests=False)  # counted outside the gate, below

    def followers(app: web.Application):
        async def ctx(app):
            tasks, mirrors = [], []
            for f in cfg.follow:
                mirror = Mirror(home.mirror_db)  # one connection per follower
                mirrors.append(mirror)
                def on_change(r, n=f.name, relay=f.relay):
                    if relay:
                        app[longpoll.WATCH].notify(n)  # wake the relay's own long-pollers
                    if api is not None:
                        api.changed()
                    if on_sync is not None:
                        on_sync(n, r)
                on_round = (lambda seconds, e, n=f.name: api.record_sync(n, seconds, e)) if api else None
                tasks.append(asyncio.create_task(follower.watch_feed(
                    mirror, f.name, list(f.urls), headers[f.name], wait=f.wait, interval=f.interval,
                    on_change=on_change, state=states[f.name], on_round=on_round), name=f"follow {f.name}"))
            yield
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for m in mirrors:
                m.close()
            store.close()
            if live is not None:
                live.close()

        app.cleanup_ctx.append(ctx)

    extensions.append(followers)
    if cfg.publish:
        keyed, missing = load_refresh_signers(home, [p.name for p in cfg.publish if p.name not in signers],
                                              {p.name: p.key for p in cfg.publish if p.key is not None})
        for m in missing:
            log.warning("feed %s: its checkpoint will not be refreshed by this node (%s)", m.feed, m.problem)
        extensions.append(lambda app: app.cleanup_ctx.append(
            refresh_task(home.publisher_db, {**signers, **keyed}, cfg.refresh_interval)))
    extensions.append(install_node_status(  # GET /: the status page, behind the same access control
        "federation node", ac, publisher_db=home.publisher_db if cfg.publish else None,
        published=[p.name for p in cfg.publish], mirror_db=home.mirror_db if cfg.follow else None,
        followed=[f.name for f in cfg.follow], auth_db=home.auth_db,
        followed_access={f.name: f.access for f in cfg.follow if not f.relay},
        relayed_access={f.name: f"{f.access}, relayed" for f in cfg.follow if f.relay}))
    gate = ac.middleware if api is None else node_gate(ac, PlatformAuth(store, ac.limiter))
    counting = [api.metrics.middleware] if api is not None else []
    app = create_app(sources, extensions=extensions,
                     middlewares=[*counting, gate, install_listing_filter(ac), *readside_middlewares])
    app[NODE_STATES] = states
    if api is not None:
        app[NODE_PLATFORM] = api
    return app


def build_publisher_app(home: Home, signers: dict | None = None, refresh_interval: float = REFRESH_INTERVAL,
                        report_rate: float = REPORT_RATE) -> web.Application:
    """Plain ``federation serve`` (no config): every feed of the publisher
    database, each readable as its stored access says (member tokens from
    ``HOME/auth.db``), through the same access control as ``build_app``.
    The checkpoints of the feeds in ``signers`` (name -> Signer) are
    re-stamped every ``refresh_interval`` seconds (``refresh``)."""

    Publisher(home.publisher_db).close()  # create the schema, or migrate it, before readers open it
    store = TokenStore(home.auth_db)
    live = StoredAccess(home.publisher_db)
    ac = AccessControl(store, None, stored=live)

    def close(app: web.Application):
        async def ctx(app):
            yield
            live.close()
            store.close()
        app.cleanup_ctx.append(ctx)

    def refresher(app: web.Application):
        app.cleanup_ctx.append(refresh_task(home.publisher_db, signers or {}, refresh_interval))

    extensions, middlewares = read_side(home.publisher_db)
    status = install_node_status("federation node", ac, publisher_db=home.publisher_db,
                                 auth_db=home.auth_db)  # GET /: the status page
    feedback = FeedbackAPI(home.publisher_db, store, rate=report_rate)  # reports a second per member
    return create_app([PublisherSource(home.publisher_db)],
                      extensions=[*extensions, feedback.install, close, refresher, status],
                      middlewares=[ac.middleware, install_listing_filter(ac), *middlewares])


def run_node(cfg: NodeConfig, home: Home, print_fn=print) -> None:
    """Serve, follow and accept publishes until interrupted."""
    app = build_app(cfg, home)
    api = ", platform API on /lookup, /changes, /webhooks, /metrics (platform tokens)" if cfg.platform else ""
    httpserver.run_app(app, cfg.host, cfg.port,
            on_start=lambda url: print_fn(f"node serving on {url}/feeds/ "
                                          f"({len(cfg.publish)} published, {len(cfg.follow)} followed{api})"))
