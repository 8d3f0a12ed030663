"""A node's config: one TOML file declares what it publishes, follows and relays.

``parse_config`` is pure (text in, ``NodeConfig`` or ``InputError`` out);
``load_config`` reads the file; ``node.assembly`` builds the node from it.

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

    [platform]          # also serve the platform API (lookup, changes, webhooks, metrics)
    threshold = 31      # default PDQ near-match distance of /lookup
"""
from __future__ import annotations

import logging
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from federation.core.bounded import toml_loads
from federation.core.trustfile import TrustFile, load_trust_file
from federation.core.errors import InputError
from federation.core.freshness import REFRESH_INTERVAL
from federation.core.names import FEED_NAME_PATTERN, is_feed_name
from federation.net.auth import ANONYMOUS_BURST, ANONYMOUS_RATE
from federation.net.publish_api import MAX_BATCH_BYTES
from federation.platform.pdq_index import DEFAULT_THRESHOLD, MAX_THRESHOLD
from federation.store.mirror import MAX_MAX_AGE
from federation.store.publisher import ACCESS_LEVELS

log = logging.getLogger("federation.node")

MAX_CONFIG_BYTES = 1 << 20
_NODE_KEYS = {"listen", "home", "anonymous_rate", "anonymous_burst", "max_batch_bytes", "refresh_interval"}
_PUBLISH_KEYS = {"name", "access", "api", "key"}
_FOLLOW_KEYS = {"name", "origin", "vkeys", "trust", "urls", "relay", "access", "token_env", "wait", "interval",
                "max_age"}
_PLATFORM_KEYS = {"threshold"}


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
    access_given: bool = False  # the config states access (else it is a default: with_recorded_tokens may close it)


@dataclass(frozen=True)
class PlatformConfig:
    """``[platform]``: the node also serves the platform API over its mirror
    (``platform.node.PlatformAPI``), behind platform tokens from its own
    ``auth.db`` ('federation platform token issue')."""

    threshold: int = DEFAULT_THRESHOLD


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
    platform: PlatformConfig | None = None  # None: no [platform] table, no platform API

    def access(self) -> dict[str, str]:
        out = {p.name: p.access for p in self.publish}
        out.update({f.name: f.access for f in self.follow if f.relay})
        return out


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


_NODE, _PUBLISH, _FOLLOW = _defaults(NodeConfig), _defaults(PublishedFeed), _defaults(FollowedFeed)
_PLATFORM = _defaults(PlatformConfig)


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
    _unknown(doc, {"node", "publish", "follow", "platform"}, "node config")
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
                                     _number(t, "interval", _FOLLOW["interval"], where, 0.1, 86400.0), max_age,
                                     "access" in t))
    platform = None
    if "platform" in doc:
        t = doc["platform"]
        _check(isinstance(t, dict), "[platform]", "must be a table")
        _unknown(t, _PLATFORM_KEYS, "[platform]")
        threshold = t.get("threshold", _PLATFORM["threshold"])
        _check(type(threshold) is int and 0 <= threshold <= MAX_THRESHOLD, "[platform]",
               f"threshold must be an integer 0..{MAX_THRESHOLD}")
        platform = PlatformConfig(threshold)
    names = [p.name for p in published] + [f.name for f in followed]
    dup = sorted({n for n in names if names.count(n) > 1})
    _check(not dup, "node config", f"feed name(s) {dup} declared twice (published and followed names share the URL space)")
    return NodeConfig(m[1].strip("[]"), int(m[2]), home,
                      _number(node, "anonymous_rate", _NODE["anonymous_rate"], "[node]", 0.001, 1e6),
                      _number(node, "anonymous_burst", _NODE["anonymous_burst"], "[node]", 1, 1e6, int),
                      _number(node, "max_batch_bytes", _NODE["max_batch_bytes"], "[node]", 1, 1 << 30, int),
                      _number(node, "refresh_interval", _NODE["refresh_interval"], "[node]", 0.0, 366 * 86400.0),
                      tuple(published), tuple(followed), platform=platform)


def load_config(path: Path | str) -> NodeConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read node config {path}: {e}") from None
    cfg = parse_config(text, path.parent)
    return NodeConfig(**{**cfg.__dict__, "path": path})


def with_recorded_tokens(cfg: NodeConfig, recorded: dict[str, str | None]) -> NodeConfig:
    """``cfg`` with what the home's mirror records of how each followed feed is
    fetched (``recorded``: name -> the ``follow --token-env`` variable, or None).

    Fail closed: a feed the mirror fetches with a member token comes from a
    members-only upstream, whatever the config omits. A ``[[follow]]`` of it
    without ``token_env`` takes the recorded variable (so the node's syncs
    still authenticate) and, without ``access``, defaults to ``members``, as
    one with ``token_env`` does; with ``access = "public"`` the config is
    refused, as it would be next to ``token_env``. Defaulting to members (not
    refusing) keeps a node that was merely not told the token's name
    serving its members, and never anyone else.
    """
    out = []
    for f in cfg.follow:
        env = recorded.get(f.name)
        if env is None or f.token_env is not None:
            out.append(f)
            continue
        _check(not (f.access_given and f.access == "public"), f"[[follow]] {f.name}",
               f"access = \"public\", but this home's mirror follows the feed with the member token in ${env} "
               "('follow --token-env'): the upstream serves it to members only; it must not be re-served or "
               "exported in the clear (say access = \"members\", or follow it anew without a token if the "
               "upstream made it public)")
        out.append(replace(f, token_env=env, access=f.access if f.access_given else "members"))
    return replace(cfg, follow=tuple(out))


# ---- what a config says about a followed feed's keys ------------------------------


def trusted_vkeys(f: FollowedFeed) -> list[str]:
    """The feed's log keys as the config states them: its ``vkeys`` plus, if
    given, its trust file's (``prepare_mirror`` uses the chain's current ones)."""
    keys = list(f.vkeys)
    t = trust_file(f)
    if t is not None:
        keys += [v.vkey for v in t.log_keys if v.vkey not in keys]
    return keys


def trust_file(f: FollowedFeed) -> TrustFile | None:
    """``f``'s trust file, loaded and checked against its origin, or None."""
    if f.trust is None:
        return None
    t = load_trust_file(f.trust)
    if t.origin != f.origin:
        raise InputError(f"[[follow]] {f.name}: trust file {f.trust} is for origin {t.origin!r}, not {f.origin!r}")
    return t
