"""``federation doctor``: check a node's configuration before it bites.

Checks, each reported as ok / warn / fail with what to do:

* the home directory exists and is not writable by others;
* ``private/`` is mode 0700 and every key file in it is 0600 (only the
  mode is read: key contents are the business of ``federation.keys``);
  every published feed has its key file;
* ``publisher.db``, ``mirror.db`` and ``platform.db`` open; ``platform.db``
  holds webhook secrets, so it must not be readable by others;
* trust: every followed feed's vkeys parse and are named after its origin;
* upstream reachability: each URL of each followed feed serves a
  checkpoint that verifies against the trusted keys (bounded timeout).

Nothing is changed. Exit status: 1 if any check failed.
"""
from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import open_checkpoint
from .db import connect
from .errors import FederationError, InputError
from .fetcher import Fetcher
from .home import Home
from .note import MAX_NOTE_BYTES, parse_vkey

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
    private = root / "private"
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
    for name, path, secret in (("publisher.db", home.publisher_db, False), ("mirror.db", home.mirror_db, False),
                               ("platform.db", home.root / "platform.db", True)):
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
            feeds = conn.execute("SELECT name FROM feeds ORDER BY name").fetchall()
        except Exception:
            feeds = []
        conn.close()
        for (feed,) in feeds:
            kp = home.key_path(feed)
            out.append(Check(OK if kp.exists() else WARN, f"feed {feed} key",
                             str(kp) if kp.exists() else f"{kp} missing: publishing {feed} needs --key"))
    return out


def followed(home: Home) -> list[tuple[str, str, list[str], list[str]]]:
    if not home.mirror_db.exists():
        return []
    conn = connect(home.mirror_db, readonly=True)
    try:
        rows = conn.execute("SELECT name, origin, vkeys, urls FROM follows ORDER BY name").fetchall()
    except Exception:
        rows = []
    conn.close()
    return [(n, o, v.split("\n"), u.split("\n")) for n, o, v, u in rows]


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


async def check_upstream(name: str, origin: str, vkeys: list[str], urls: list[str],
                         timeout: float = 10.0) -> list[Check]:
    out = []
    try:
        keys = [parse_vkey(v) for v in vkeys]
    except InputError:
        return [Check(FAIL, f"feed {name} upstream", "skipped: the trusted keys do not parse")]
    for url in urls:
        try:
            async with Fetcher(url) as f:
                raw = await asyncio.wait_for(f.get("checkpoint", MAX_NOTE_BYTES), timeout)
            cp = open_checkpoint(raw, origin, keys).checkpoint
            out.append(Check(OK, f"feed {name} upstream", f"{url}: verified checkpoint, size {cp.size}"))
        except asyncio.TimeoutError:
            out.append(Check(FAIL, f"feed {name} upstream", f"{url}: no answer within {timeout}s"))
        except FederationError as e:
            out.append(Check(FAIL, f"feed {name} upstream", f"{url}: {e.kind}: {e}"))
    return out


async def run_doctor(home: Home, network: bool = True, timeout: float = 10.0) -> list[Check]:
    checks = check_files(home)
    for name, origin, vkeys, urls in followed(home):
        checks += check_trust(name, origin, vkeys)
        if network:
            checks += await check_upstream(name, origin, vkeys, urls, timeout)
    if not followed(home) and not home.publisher_db.exists():
        checks.append(Check(WARN, "config", "this node neither publishes nor follows a feed"))
    return checks
