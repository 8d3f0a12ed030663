"""A node: one TOML file declares what it publishes, follows and relays.

``parse_config`` is pure (text in, ``NodeConfig`` or ``InputError`` out);
``build_app`` wires the parts into one aiohttp app:

* read side: ``server.create_app`` over the publisher DB and, for followed
  feeds with ``relay = true``, a ``relay.RelaySource`` over the mirror DB;
* access control (``auth``) as the outermost middleware, then long-poll
  (``longpoll``), so an unauthenticated request is never held;
* the publishing API (``publish_api``) for published feeds with ``api``;
* one follower task per followed feed (``follower.watch_feed``) in
  ``cleanup_ctx``: started with the app, cancelled on shutdown. Each has its
  own mirror connection, because a SQLite connection holds one transaction.

Example (the README's platform node)::

    [node]
    listen = "127.0.0.1:8082"

    [[publish]]
    name = "internal"
    access = "members"

    [[follow]]
    name = "tid"
    origin = "clearinghouse.example/feeds/tid"
    vkeys = ["clearinghouse.example/feeds/tid+1a2b3c4d+AW..."]
    urls = ["http://127.0.0.1:8081/feeds/tid/", "http://127.0.0.1:8080/feeds/tid/"]
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from aiohttp import web

from federation.core.bounded import toml_loads
from federation.core.errors import InputError
from federation.core.freshness import DEFAULT_MAX_AGE, REFRESH_INTERVAL
from federation.node.home import Home
from federation.core.names import FEED_NAME_PATTERN, is_feed_name
from federation.net.auth import ANONYMOUS_BURST, ANONYMOUS_RATE
from federation.net.publish_api import MAX_BATCH_BYTES
from federation.store.mirror import MAX_MAX_AGE
from federation.store.publisher import ACCESS_LEVELS

log = logging.getLogger("federation.node")

MAX_CONFIG_BYTES = 1 << 20
_NODE_KEYS = {"listen", "home", "anonymous_rate", "anonymous_burst", "max_batch_bytes", "refresh_interval"}
_PUBLISH_KEYS = {"name", "access", "api", "key"}
_FOLLOW_KEYS = {"name", "origin", "vkeys", "trust", "urls", "relay", "access", "token_env", "wait", "interval",
                "max_age"}


# Defaults are stated once, here: as the dataclass defaults below (the
# component's own constant where it has one), which ``parse_config`` reads
# for every key a config leaves out. docs/node.md lists the same values.


@dataclass(frozen=True)
class PublishedFeed:
    name: str
    access: str | None = None  # None: as stored with the feed; may narrow it, never widen (federation.access)
    api: bool = True
    key: Path | None = None  # default: the feed's recorded key file, else HOME/private/NAME.key (Home.feed_key)


@dataclass(frozen=True)
class FollowedFeed:
    name: str
    origin: str
    urls: tuple[str, ...]
    vkeys: tuple[str, ...] = ()
    trust: Path | None = None
    relay: bool = False
    access: str = "public"
    token_env: str | None = None
    wait: float = 20.0
    interval: float = 30.0
    max_age: int | None = None  # None: DEFAULT_MAX_AGE, or the trust file's max_staleness_seconds


@dataclass(frozen=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    home: Path | None = None
    anonymous_rate: float = ANONYMOUS_RATE
    anonymous_burst: int = ANONYMOUS_BURST
    max_batch_bytes: int = MAX_BATCH_BYTES
    refresh_interval: float = REFRESH_INTERVAL
    publish: tuple[PublishedFeed, ...] = ()
    follow: tuple[FollowedFeed, ...] = ()
    path: Path | None = field(default=None, compare=False)

    def access(self) -> dict[str, str]:
        out = {p.name: p.access for p in self.publish}
        out.update({f.name: f.access for f in self.follow if f.relay})
        return out


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


_NODE, _PUBLISH, _FOLLOW = _defaults(NodeConfig), _defaults(PublishedFeed), _defaults(FollowedFeed)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise InputError(f"{where}: {msg}")


def _unknown(table: dict, allowed: set, where: str) -> None:
    extra = sorted(set(table) - allowed)
    _check(not extra, where, f"unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _path(base: Path, value, where: str) -> Path:
    _check(isinstance(value, str) and value != "", where, "must be a non-empty path string")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _number(table: dict, key: str, default, where: str, low: float, high: float, kind=float):
    value = table.get(key, default)
    # bounded.toml_loads already refused inf, nan and integers beyond 64 bits;
    # the upper bounds keep sleeps, buckets and body limits sane.
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high,
           where, f"{key} must be a number between {low} and {high:g}")
    return kind(value)


def parse_config(text: str, base: Path | str = ".") -> NodeConfig:
    """Parse and validate a node config. Relative paths are relative to ``base``."""
    base = Path(base)
    doc = toml_loads(text, "node config", max_bytes=MAX_CONFIG_BYTES, error=InputError)
    _unknown(doc, {"node", "publish", "follow"}, "node config")
    node = doc.get("node", {})
    _check(isinstance(node, dict), "[node]", "must be a table")
    _unknown(node, _NODE_KEYS, "[node]")
    listen = node.get("listen", f"{_NODE['host']}:{_NODE['port']}")
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", listen) if isinstance(listen, str) else None
    _check(m is not None and int(m[2]) < 65536, "[node] listen", f"want HOST:PORT, got {listen!r}")
    home = _path(base, node["home"], "[node] home") if "home" in node else None

    published = []
    for i, t in enumerate(doc.get("publish", [])):
        where = f"[[publish]] #{i + 1}"
        _check(isinstance(t, dict), where, "must be a table")
        _unknown(t, _PUBLISH_KEYS, where)
        name = t.get("name")
        _check(is_feed_name(name), where, f"name must match {FEED_NAME_PATTERN} (not '.' or '..')")
        _check("access" not in t or t["access"] in ACCESS_LEVELS, where, f"access must be one of {ACCESS_LEVELS}")
        _check(isinstance(t.get("api", _PUBLISH["api"]), bool), where, "api must be true or false")
        published.append(PublishedFeed(name, t.get("access"), t.get("api", _PUBLISH["api"]),
                                       _path(base, t["key"], where + " key") if "key" in t else None))

    followed = []
    for i, t in enumerate(doc.get("follow", [])):
        where = f"[[follow]] #{i + 1}"
        _check(isinstance(t, dict), where, "must be a table")
        _unknown(t, _FOLLOW_KEYS, where)
        name = t.get("name")
        _check(is_feed_name(name), where, f"name must match {FEED_NAME_PATTERN} (not '.' or '..')")
        where = f"[[follow]] {name}"
        origin = t.get("origin")
        _check(isinstance(origin, str) and origin != "" and not any(c.isspace() for c in origin), where,
               "origin must be a string without spaces")
        urls = t.get("urls")
        _check(isinstance(urls, list) and urls and all(isinstance(u, str) and re.fullmatch(r"https?://\S+", u) for u in urls),
               where, "urls must be a non-empty list of http(s) URLs, tried in order")
        vkeys = t.get("vkeys", [])
        _check(isinstance(vkeys, list) and all(isinstance(v, str) for v in vkeys), where, "vkeys must be a list")
        trust = _path(base, t["trust"], where + " trust") if "trust" in t else None
        _check(bool(vkeys) or trust is not None, where, "needs vkeys or a trust file")
        _check(t.get("access", _FOLLOW["access"]) in ACCESS_LEVELS, where, f"access must be one of {ACCESS_LEVELS}")
        _check(isinstance(t.get("relay", _FOLLOW["relay"]), bool), where, "relay must be true or false")
        token_env = t.get("token_env")
        _check(token_env is None or isinstance(token_env, str), where, "token_env must be a string")
        max_age = t.get("max_age")
        _check(max_age is None or (type(max_age) is int and 1 <= max_age <= MAX_MAX_AGE), where,
               f"max_age must be an integer number of seconds, 1..{MAX_MAX_AGE}")
        # Fetched with a member token: members-only upstream, so never public here.
        _check(token_env is None or t.get("access") != "public", where,
               "access = \"public\" with token_env: the upstream serves this feed to members only; "
               "it must not be re-served or exported in the clear")
        followed.append(FollowedFeed(name, origin, tuple(u if u.endswith("/") else u + "/" for u in urls),
                                     tuple(vkeys), trust, t.get("relay", _FOLLOW["relay"]),
                                     t.get("access", _FOLLOW["access"] if token_env is None else "members"),
                                     token_env, _number(t, "wait", _FOLLOW["wait"], where, 0.0, 3600.0),
                                     _number(t, "interval", _FOLLOW["interval"], where, 0.1, 86400.0), max_age))
    names = [p.name for p in published] + [f.name for f in followed]
    dup = sorted({n for n in names if names.count(n) > 1})
    _check(not dup, "node config", f"feed name(s) {dup} declared twice (published and followed names share the URL space)")
    return NodeConfig(m[1].strip("[]"), int(m[2]), home,
                      _number(node, "anonymous_rate", _NODE["anonymous_rate"], "[node]", 0.001, 1e6),
                      _number(node, "anonymous_burst", _NODE["anonymous_burst"], "[node]", 1, 1e6, int),
                      _number(node, "max_batch_bytes", _NODE["max_batch_bytes"], "[node]", 1, 1 << 30, int),
                      _number(node, "refresh_interval", _NODE["refresh_interval"], "[node]", 0.0, 366 * 86400.0),
                      tuple(published), tuple(followed))


def load_config(path: Path | str) -> NodeConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read node config {path}: {e}") from None
    cfg = parse_config(text, path.parent)
    return NodeConfig(**{**cfg.__dict__, "path": path})


# ---- wiring ------------------------------------------------------------------------


def trusted_vkeys(f: FollowedFeed) -> list[str]:
    """The feed's log keys as the config states them: its ``vkeys`` plus, if
    given, its trust file's (``prepare_mirror`` uses the chain's current ones)."""
    keys = list(f.vkeys)
    t = _trust_file(f)
    if t is not None:
        keys += [v.vkey for v in t.log_keys if v.vkey not in keys]
    return keys


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
    from federation.store.mirror import Mirror
    from federation.store.trust_chain import TrustChain
    from federation.trust.rotation import follow_with_trust
    if not cfg.follow:
        return
    mirror = Mirror(home.mirror_db)
    try:
        for f in cfg.follow:
            trust = _trust_file(f)
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


def _trust_file(f: FollowedFeed):
    """``f``'s trust file, loaded and checked against its origin, or None."""
    if f.trust is None:
        return None
    from federation.core.trustfile import load_trust_file
    t = load_trust_file(f.trust)
    if t.origin != f.origin:
        raise InputError(f"[[follow]] {f.name}: trust file {f.trust} is for origin {t.origin!r}, not {f.origin!r}")
    return t


def load_signers(home: Home, cfg: NodeConfig) -> dict:
    """The publishing API's signers: each feed's ``key``, else the key file the
    feed is signed with (``Home.feed_key``)."""
    from federation.node.keys import load_signer
    from federation.node.refresh import recorded_key_files
    recorded = recorded_key_files(home)
    return {p.name: load_signer(p.key or home.feed_key(p.name, recorded.get(p.name))) for p in cfg.publish if p.api}


def build_app(cfg: NodeConfig, home: Home, signers: dict | None = None, on_sync=None) -> web.Application:
    """The node's app. ``signers`` (name -> Signer) defaults to the key files;
    ``on_sync(name, SyncResult)`` is called after each sync that applied something."""
    from federation.net import longpoll
    from federation.sync import follower
    from federation.net.access import StoredAccess, combine
    from federation.net.auth import AccessControl, install_listing_filter
    from federation.store.tokens import TokenStore
    from federation.store.mirror import Mirror
    from federation.net.publish_api import PublishAPI
    from federation.store.publisher import Publisher
    from federation.net.relay import RelaySource
    from federation.net.server import PublisherSource, create_app

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
    holder: dict = {}

    def notify(name: str) -> None:
        app = holder.get("app")
        if app is not None and longpoll.WATCH in app:
            app[longpoll.WATCH].notify(name)

    from federation.net.readside import read_side
    extensions, readside_middlewares = read_side(home.publisher_db if cfg.publish else None,
                                                 home.mirror_db if relayed else None, relayed,
                                                 published=[p.name for p in cfg.publish])
    api_signers = {n: s for n, s in signers.items() if any(p.name == n and p.api for p in cfg.publish)}
    if api_signers:
        from federation.node.cosigning import cosign_configured

        async def after_publish(name: str):
            return await cosign_configured(home.publisher_db, name)

        extensions.append(PublishAPI(home.publisher_db, api_signers, cfg.max_batch_bytes, notify, store,
                                     after_publish=after_publish).install)

    states = {f.name: follower.FollowState(f.name) for f in cfg.follow}

    def followers(app: web.Application):
        async def ctx(app):
            tasks, mirrors = [], []
            for f in cfg.follow:
                mirror = Mirror(home.mirror_db)  # one connection per follower
                mirrors.append(mirror)
                def on_change(r, n=f.name, relay=f.relay):
                    if relay:
                        notify(n)  # wake the relay's own long-pollers
                    if on_sync is not None:
                        on_sync(n, r)
                tasks.append(asyncio.create_task(follower.watch_feed(
                    mirror, f.name, list(f.urls), headers[f.name], wait=f.wait, interval=f.interval,
                    on_change=on_change, state=states[f.name]), name=f"follow {f.name}"))
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
        from federation.node.refresh import load_refresh_signers, refresh_task
        keyed, missing = load_refresh_signers(home, [p.name for p in cfg.publish if p.name not in signers],
                                              {p.name: p.key for p in cfg.publish if p.key is not None})
        for m in missing:
            log.warning("feed %s: its checkpoint will not be refreshed by this node (%s)", m.feed, m.problem)
        extensions.append(lambda app: app.cleanup_ctx.append(
            refresh_task(home.publisher_db, {**signers, **keyed}, cfg.refresh_interval)))
    app = create_app(sources, extensions=extensions,
                     middlewares=[ac.middleware, install_listing_filter(ac), *readside_middlewares])
    app[NODE_STATES] = states
    holder["app"] = app
    return app


NODE_STATES = web.AppKey("node_follow_states", dict)


def build_publisher_app(home: Home, signers: dict | None = None,
                        refresh_interval: float = REFRESH_INTERVAL) -> web.Application:
    """Plain ``federation serve`` (no config): every feed of the publisher
    database, each readable as its stored access says (member tokens from
    ``HOME/auth.db``), through the same access control as ``build_app``.
    The checkpoints of the feeds in ``signers`` (name -> Signer) are
    re-stamped every ``refresh_interval`` seconds (``refresh``)."""
    from federation.net.access import StoredAccess
    from federation.net.auth import AccessControl, install_listing_filter
    from federation.store.tokens import TokenStore
    from federation.store.publisher import Publisher
    from federation.net.readside import read_side
    from federation.net.server import PublisherSource, create_app

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
        from federation.node.refresh import refresh_task
        app.cleanup_ctx.append(refresh_task(home.publisher_db, signers or {}, refresh_interval))

    extensions, middlewares = read_side(home.publisher_db)
    return create_app([PublisherSource(home.publisher_db)], extensions=[*extensions, close, refresher],
                      middlewares=[ac.middleware, install_listing_filter(ac), *middlewares])


def run_node(cfg: NodeConfig, home: Home, print_fn=print) -> None:
    """Serve, follow and accept publishes until interrupted."""
    from federation.net.httpserver import run_app
    app = build_app(cfg, home)
    run_app(app, cfg.host, cfg.port,
            on_start=lambda url: print_fn(f"node serving on {url}/feeds/ "
                                          f"({len(cfg.publish)} published, {len(cfg.follow)} followed)"))
