"""``federation doctor``: check a node's configuration before it bites.

Checks, each reported as ok / warn / fail with what to do:

* the home directory exists and is not writable by others;
* ``private/`` is mode 0700 and every key file in it is 0600 (only the
  mode is read: key contents are the business of ``federation.keys``);
  every published feed has its key file (``Home.feed_key``: the recorded
  one, else ``private/NAME.key``);
* ``publisher.db``, ``mirror.db`` and ``platform.db`` open; ``platform.db``
  holds webhook secrets, so it must not be readable by others;
* trust: every followed feed's vkeys parse and are named after its origin;
* readiness: every followed feed would answer a lookup (``readiness``: it
  synced, its last sync did not fail verification, and its newest verified
  timestamp is within its maximum age); a ``last_error`` left by an
  upstream that failed while another succeeded is a warning;
* upstreams, as ``sync`` checks them: each URL of each followed feed serves
  a checkpoint that verifies against the trusted keys (bounded timeout), is
  not a rollback or a fork of what the mirror holds, and is fresh by sync's
  rule (the newest of the log's own timestamp, a witness quorum's under a
  trust file, and the time of the seal the mirror applied for that tree)
  within the feed's maximum age -- a frozen relay fails here.

With a node config (``doctor --config node.toml``, parsed by
``node.load_config``) the config is the truth, and each problem that would
make ``federation serve --config`` refuse to start or fail later is named:

* the config does not parse (the loader's precise message);
* a published feed that is not in ``publisher.db``, whose key file is
  missing, not mode 0600 (no group or other bits), unreadable, or not the
  key the feed's checkpoints are signed with;
* a followed feed whose trust file is missing, malformed, badly signed or
  for another origin, whose vkeys do not parse or are not named after its
  origin, whose ``token_env`` variable is unset, or which the mirror
  already follows under another origin;
* each upstream URL, fetched with the feed's token, must serve a checkpoint
  that verifies against the feed's log keys within ``timeout`` seconds.

Feeds the mirror follows but the config does not are reported (the node
will not sync them) and not contacted.

Nothing is changed. Exit status: 1 if any check failed.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

import time

from federation.core.acceptance import Acceptance
from federation.core.checkpoint import open_checkpoint
from federation.store.db import connect
from federation.core.errors import FederationError, InputError, NothingNew
from federation.net.fetcher import Fetcher
from federation.core.freshness import describe_age, log_timestamp
from federation.node.home import Home
from federation.store.mirror import Follow, read_follows
from federation.store.publisher import feed_key_files, feed_keys, signing_problems
from federation.store.trust_chain import newest_trust_files
from federation.core.note import MAX_NOTE_BYTES, parse_vkey
from federation.core.readiness import assess
from federation.core.trustfile import check_cosignatures, load_trust_file, parse_trust, quorum_cosignatures
from federation.node.config import load_config
from federation.node.keys import load_signer

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    status: str
    what: str
    detail: str


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_files(home: Home) -> list[Check]:
    out: list[Check] = []
    root = home.root
    if not root.is_dir():
        return [Check(FAIL, "home", f"{root} is not a directory")]
    m = _mode(root)
    out.append(Check(FAIL if m & stat.S_IWOTH else OK, "home", f"{root} (mode {m:o})"
                     + (": writable by others; chmod o-w" if m & stat.S_IWOTH else "")))
    private = home.private_dir
    if private.exists():
        m = _mode(private)
        bad = m & (stat.S_IRWXG | stat.S_IRWXO)
        out.append(Check(FAIL if bad else OK, "private keys dir",
                         f"{private} mode {m:o}" + (f": chmod 700 {private}" if bad else "")))
        for key in sorted(private.glob("*.key")):
            m = _mode(key)
            bad = m & (stat.S_IRWXG | stat.S_IRWXO)
            out.append(Check(FAIL if bad else OK, "key file",
                             f"{key} mode {m:o}" + (f": readable by others; chmod 600 {key}" if bad else "")))
    for path, secret in ((home.publisher_db, False), (home.mirror_db, False), (home.platform_db, True)):
        name = path.name
        if not path.exists():
            continue
        try:
            conn = connect(path, readonly=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            conn.close()
        except (FederationError, Exception) as e:  # any failure to open is the finding itself
            out.append(Check(FAIL, name, f"{path} does not open: {e}"))
            continue
        m = _mode(path)
        if secret and m & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(Check(WARN, name, f"{path} mode {m:o} holds webhook secrets: chmod 600 {path}"))
        else:
            out.append(Check(OK, name, f"{path} opens"))
    if home.publisher_db.exists():
        conn = connect(home.publisher_db, readonly=True)
        try:
            feeds = feed_key_files(conn)
        except Exception:  # noqa: BLE001 -- not a publisher database: check_files reports whether it opens
            feeds = {}
        conn.close()
        for feed, problem in sorted(_signing_problems(home).items()):
            out.append(Check(FAIL, f"feed {feed} signing", f"cannot sign: {problem}"))
        for feed, recorded in sorted(feeds.items()):
            kp = home.feed_key(feed, recorded)
            out.append(Check(OK if kp.exists() else WARN, f"feed {feed} key",
                             str(kp) if kp.exists() else f"{kp} missing: publishing {feed} needs --key"))
    return out


def _signing_problems(home: Home) -> dict[str, str]:
    """Published feeds that cannot sign: the database is older than (or
    differs from) what this node served -- a restored backup; every publish
    and refresh would be refused until ``feed recover``."""
    try:
        conn = connect(home.publisher_db, readonly=True)
    except FederationError:
        return {}  # check_files reports that it does not open
    try:
        return signing_problems(conn, home.publisher_db)
    except (sqlite3.Error, FederationError):
        return {}  # not a publisher database: check_files reports whether it opens
    finally:
        conn.close()


def followed(home: Home) -> list[tuple[str, str, list[str], list[str]]]:
    return [(f.name, f.origin, list(f.vkeys), list(f.urls)) for f in mirror_state(home)[0]]


def mirror_state(home: Home) -> tuple[list[Follow], dict]:
    """(followed feeds, newest trust file bytes by feed), read only."""
    if not home.mirror_db.exists():
        return [], {}
    conn = connect(home.mirror_db, readonly=True)
    try:
        try:
            follows = read_follows(conn)
        except Exception:  # not a mirror database: check_files reports whether it opens
            return [], {}
        try:
            trusts = newest_trust_files(conn)  # {} without a trust_chain table: no feed follows a trust file
        except Exception:  # noqa: BLE001 -- an unreadable chain is reported by the upstream checks
            trusts = {}
        return follows, trusts
    finally:
        conn.close()


def check_ready(follows: list[Follow], now: int) -> list[Check]:
    """Would a lookup answer from each feed? (``readiness``: fail closed.)"""
    out = []
    for f in follows:
        b = assess(f, now)
        if not b.ready:
            out.append(Check(FAIL, f"feed {f.name} lookups", f"{b.problem}: {b.detail}; lookups fail closed"))
            continue
        out.append(Check(OK, f"feed {f.name} lookups", f"ready: {b.describe()}"))
        if f.last_error:
            out.append(Check(WARN, f"feed {f.name} upstreams", f"an upstream failed while another served: "
                                                               f"{f.last_error}"))
    return out


def check_trust(name: str, origin: str, vkeys: list[str]) -> list[Check]:
    out = []
    for v in vkeys:
        try:
            key = parse_vkey(v)
        except InputError as e:
            out.append(Check(FAIL, f"feed {name} trust", str(e)))
            continue
        if key.name != origin:
            out.append(Check(FAIL, f"feed {name} trust", f"key {v} is named {key.name!r}, not the origin {origin!r}"))
        else:
            out.append(Check(OK, f"feed {name} trust", f"key {key.name}+{key.key_id:08x}"))
    return out


def _upstream_problem(raw: bytes, keys, follow: Follow, trust: bytes | None, now: int) -> tuple[str, str]:
    """(status, detail): what ``sync`` would make of a verified upstream
    checkpoint ``raw``, against the mirror's state ``follow`` -- FAIL for a
    rollback, a fork or staleness, WARN when only a sync can tell, OK ("").

    Freshness by sync's rule: the newest of the note's log timestamp, the
    witness quorum's time and the mirror's ``fresh_time`` (which holds the
    time of the seal it applied last, and only moves forward). For the tree
    the mirror holds that is exactly what sync checks. For a bigger tree, the
    seal of its newest version also counts, and doctor does not fetch it:
    when nothing else is fresh it cannot tell, and says so (WARN).
    """
    acc = Acceptance(follow.origin, keys, follow.trusted_state())  # the witness quorum is checked below
    acc.open_checkpoint(raw)
    same = False
    try:
        acc.accept_checkpoint()
    except NothingNew:
        same = True
    except FederationError as e:
        return FAIL, f"{e.kind}: {e}"
    if trust is not None:
        # As sync: under a trust file only the witness quorum vouches for
        # freshness, within the trust file's window as well as the feed's.
        try:
            check_cosignatures(parse_trust(trust, strict=False), raw, now, f"{follow.origin} checkpoint")
        except FederationError as e:
            return FAIL, f"{e.kind}: {e}"
        # (the mirror's fresh_time of a witnessed feed holds quorum times only)
        times = [quorum_cosignatures(parse_trust(trust, strict=False), raw, now).quorum_time,
                 follow.fresh_time if follow.witnessed else None]
    else:
        times = [log_timestamp(raw, keys, now, follow.max_age).time, follow.fresh_time]
    stamped = max((t for t in times if t is not None), default=None)
    age = None if stamped is None else now - stamped
    if age is None or age > follow.max_age:
        if not same:
            return WARN, (f"serves a bigger tree than the mirror holds, and nothing newer than "
                          f"{describe_age(age)} says it is current: the seal of its newest version decides "
                          f"(run 'federation sync'); over {follow.max_age} s the feed is stale")
        return FAIL, (f"stale: its newest timestamp is {describe_age(age)}, over the feed's maximum age of "
                      f"{follow.max_age} s (a frozen upstream, or a publisher that stopped refreshing)")
    return OK, ""


async def check_upstream(name: str, origin: str, vkeys: list[str], urls: list[str],
                         timeout: float = 10.0, headers: dict | None = None, follow: Follow | None = None,
                         trust: bytes | None = None) -> list[Check]:
    """Each URL serves a checkpoint that verifies; with ``follow`` (the
    mirror's state), one that ``sync`` would also accept: no rollback or
    fork of that state, and fresh within the feed's maximum age."""
    out = []
    try:
        keys = [parse_vkey(v) for v in vkeys]
    except InputError:
        return [Check(FAIL, f"feed {name} upstream", "skipped: the trusted keys do not parse")]
    for url in urls:
        try:
            async with Fetcher(url, headers=headers) as f:
                raw = await asyncio.wait_for(f.get("checkpoint", MAX_NOTE_BYTES), timeout)
            cp = open_checkpoint(raw, origin, keys).checkpoint
            status, problem = (OK, "") if follow is None else _upstream_problem(raw, keys, follow, trust,
                                                                                int(time.time()))
            if problem:
                out.append(Check(status, f"feed {name} upstream", f"{url}: {problem}"))
            else:
                out.append(Check(OK, f"feed {name} upstream", f"{url}: verified checkpoint, size {cp.size}"))
        except asyncio.TimeoutError:
            out.append(Check(FAIL, f"feed {name} upstream", f"{url}: no answer within {timeout}s"))
        except FederationError as e:
            out.append(Check(FAIL, f"feed {name} upstream", f"{url}: {e.kind}: {e}"))
    return out


# ---- a node config (``doctor --config``) ---------------------------------------


def load_node_config(path: Path | str):
    """(config or None, the check saying whether it parsed)."""
    try:
        cfg = load_config(path)
    except InputError as e:
        return None, Check(FAIL, "config", str(e))
    return cfg, Check(OK, "config", f"{path}: {len(cfg.publish)} published, {len(cfg.follow)} followed")


def _key_mode(path: Path, what: str) -> Check | None:
    """A failing check if ``path``'s mode lets group or others in, else None."""
    m = _mode(path)
    if m & (stat.S_IRWXG | stat.S_IRWXO):
        return Check(FAIL, what, f"{path} mode {m:o}, want 600: chmod 600 {path}")
    return None


def check_published(cfg, home: Home) -> list[Check]:
    feeds: dict[str, str] = {}  # name -> vkey of the feed in publisher.db
    recorded: dict[str, str | None] = {}  # name -> its recorded key file
    if cfg.publish and home.publisher_db.exists():
        conn = connect(home.publisher_db, readonly=True)
        try:
            feeds, recorded = feed_keys(conn), feed_key_files(conn)
        except Exception:  # noqa: BLE001 -- not a publisher database: check_files reports whether it opens
            feeds = {}
        finally:
            conn.close()
    out = []
    for p in cfg.publish:
        what = f"published {p.name}"
        if p.name not in feeds:
            out.append(Check(FAIL, what, f"not a feed of {home.publisher_db}: create it with "
                                         f"'federation feed create {p.name} --origin ...'"))
        path = p.key or home.feed_key(p.name, recorded.get(p.name))
        if not path.exists():
            # The node loads keys only for feeds with the publishing API on.
            out.append(Check(FAIL if p.api else WARN, what + " key",
                             f"{path} missing" + (": the publishing API needs it" if p.api else "")))
            continue
        bad = _key_mode(path, what + " key")
        if bad is not None:
            out.append(bad)
            continue
        try:
            signer = load_signer(path)
        except (FederationError, OSError, ValueError) as e:
            out.append(Check(FAIL, what + " key", f"{path} does not load: {e}"))
            continue
        if p.name in feeds and signer.vkey != feeds[p.name]:
            out.append(Check(FAIL, what + " key", f"{path} holds {signer.vkey}, but the feed is signed by "
                                                  f"{feeds[p.name]}"))
            continue
        out.append(Check(OK, what + " key", f"{path} (mode {_mode(path):o}) signs {p.name}"))
    return out


def _mirror_follows(home: Home) -> dict[str, tuple[str, list[str]]]:
    return {n: (o, v) for n, o, v, _u in followed(home)}


def config_vkeys(f, have: dict) -> tuple[list[str], list[Check]]:
    """The log keys of followed feed ``f`` (config vkeys, trust file, and keys the
    mirror moved to by rotation), and the checks of its trust configuration."""
    what = f"followed {f.name} trust"
    out: list[Check] = []
    vkeys = list(f.vkeys)
    if f.trust is not None:
        if not f.trust.exists():
            out.append(Check(FAIL, what, f"trust file {f.trust} missing"))
        else:
            try:
                t = load_trust_file(f.trust)
            except InputError as e:
                out.append(Check(FAIL, what, str(e)))
            else:
                if t.origin != f.origin:
                    out.append(Check(FAIL, what, f"trust file {f.trust} is for origin {t.origin!r}, "
                                                 f"not {f.origin!r}"))
                else:
                    out.append(Check(OK, what, f"{f.trust}: {t.describe()}, {len(t.log_keys)} log key(s)"))
                    vkeys += [v.vkey for v in t.log_keys if v.vkey not in vkeys]
    out += [Check(c.status, what, c.detail) for c in check_trust(f.name, f.origin, list(f.vkeys))]
    if f.name in have:
        origin, mirror_keys = have[f.name]
        if origin != f.origin:
            out.append(Check(FAIL, f"followed {f.name}", f"the mirror follows origin {origin!r}, the config says "
                                                         f"{f.origin!r}: follow it under a new name"))
        elif f.trust is not None:
            vkeys += [v for v in mirror_keys if v and v not in vkeys]  # rotations past the file
    return vkeys, out


async def check_followed(cfg, home: Home, network: bool, timeout: float) -> list[Check]:
    have = _mirror_follows(home)
    follows, trusts = mirror_state(home)
    state = {f.name: f for f in follows}
    out: list[Check] = check_ready([f for f in follows if f.name in {c.name for c in cfg.follow}],
                                   int(time.time()))
    for f in cfg.follow:
        vkeys, checks = config_vkeys(f, have)
        out += checks
        headers = None
        if f.token_env is not None:
            token = os.environ.get(f.token_env)
            if not token:
                out.append(Check(FAIL, f"followed {f.name} token", f"environment variable {f.token_env} "
                                                                   "(its upstream token) is not set"))
            else:
                headers = {"Authorization": f"Bearer {token}"}
        if not network:
            continue
        if not vkeys:
            out.append(Check(FAIL, f"followed {f.name} upstream", "skipped: no usable log key"))
            continue
        mine = state.get(f.name)
        if mine is not None and mine.origin != f.origin:
            mine = None  # reported above: the mirror follows another origin under this name
        out += [Check(c.status, f"followed {f.name} upstream", c.detail)
                for c in await check_upstream(f.name, f.origin, vkeys, list(f.urls), timeout, headers,
                                              mine, trusts.get(f.name))]
    declared = {f.name for f in cfg.follow}
    for name in sorted(set(have) - declared):
        out.append(Check(WARN, f"followed {name}", "the mirror follows it but the config does not: "
                                                   "the node will not sync it"))
    return out


async def run_doctor(home: Home, network: bool = True, timeout: float = 10.0, config=None) -> list[Check]:
    """Every check of ``home``; with ``config`` (a ``node.NodeConfig``), of that node."""
    checks = check_files(home)
    if config is not None:
        checks += check_published(config, home)
        checks += await check_followed(config, home, network, timeout)
        if not config.publish and not config.follow:
            checks.append(Check(WARN, "config", "this node neither publishes nor follows a feed"))
        return checks
    follows, trusts = mirror_state(home)
    checks += check_ready(follows, int(time.time()))
    for f in follows:
        checks += check_trust(f.name, f.origin, list(f.vkeys))
        if network:
            checks += await check_upstream(f.name, f.origin, list(f.vkeys), list(f.urls), timeout,
                                           follow=f, trust=trusts.get(f.name))
    if not follows and not home.publisher_db.exists():
        checks.append(Check(WARN, "config", "this node neither publishes nor follows a feed"))
    return checks
