"""CLI for trust files, rotation, cosigning and witnessing (thin: see trust,
rotation, cosign, witness and gossip for the logic).

Commands: ``federation trust keygen|new|sign|check|publish``,
``federation cosign keygen|configure|run``, ``federation witness add-log|serve``,
``federation feed rotate-key``. ``federation publish`` calls
``cosign_after_publish`` here for feeds with cosigning configured.
``federation follow --trust`` and ``federation verify --against`` live in
``cli.py`` and call ``follow_trusted`` / ``verify_against_command`` here.
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import click

from federation.core.errors import FederationError, InputError
from federation.cli.logs import log_json_option
from federation.node.home import Home


def _write_file(path: Path, data: bytes) -> None:
    # Trust files are public; write atomically so a reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@click.group()
def trust():
    """Trust files (keys/<feed>.trust): create, sign, check, publish.

    \b
    Example:
      federation trust check keys/tid.trust
    """


@trust.command("keygen")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private trust key (mode 0600). Keep it offline.")
def trust_keygen(name, out):
    """Create an Ed25519 trust key NAME (signs trust files) and print its vkey.

    \b
    Example:
      federation trust keygen clearinghouse.example/trust/root-1 --out /secure/root-1.key
    """
    from federation.node.keys import write_new_key
    click.echo(write_new_key(out, name).vkey)


@trust.command("new")
@click.option("--origin", required=True, help="The feed's checkpoint origin.")
@click.option("--version", "version", default=1, show_default=True, help="Trust version number.")
@click.option("--max-staleness", default=86400, show_default=True,
              help="Seconds after which a checkpoint without fresh witness cosignatures is stale.")
@click.option("--log-key", "log_keys", multiple=True, required=True, help="Log vkey (type 0x01); repeatable.")
@click.option("--witness", "witnesses", multiple=True, required=True,
              help="Witness cosigner vkey (type 0x04); repeatable.")
@click.option("--quorum", default=1, show_default=True, help="Witness cosignatures required.")
@click.option("--trust-key", "trust_keys", multiple=True, required=True,
              help="Trust key vkey (signs the next version); repeatable.")
@click.option("--threshold", default=1, show_default=True, help="Trust key signatures required.")
@click.option("--sign", "sign_keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private trust key file to sign with (old and/or new keys); repeatable.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Trust file to write.")
def trust_new(origin, version, max_staleness, log_keys, witnesses, quorum, trust_keys, threshold, sign_keys, out):
    """Write a trust file (version 1, or the next version for a rotation).

    \b
    Example:
      federation trust new --origin clearinghouse.example/feeds/tid \\
        --log-key 'clearinghouse.example/feeds/tid+1a2b3c4d+AW...' \\
        --witness 'witness.platform-a.example+5e6f7a8b+BA...' --quorum 1 \\
        --trust-key 'clearinghouse.example/trust/root-1+9c0d1e2f+AW...' --threshold 1 \\
        --sign /secure/root-1.key -o keys/tid.trust
    """
    from federation.core.errors import MalformedError
    from federation.node.keys import load_signer
    from federation.core.trustfile import render_trust, sign_trust
    try:
        text = render_trust(origin, version, max_staleness, list(log_keys), list(witnesses), quorum,
                            list(trust_keys), threshold)
    except MalformedError as e:
        raise InputError(f"refusing to write a trust file: {e}") from None
    signers = [load_signer(p) for p in sign_keys]
    if not signers:
        raise InputError("sign with at least one trust key (--sign)")
    _write_file(out, sign_trust(text, signers))
    click.echo(f"wrote {out} (version {version}, {len(signers)} signature(s))")


@trust.command("sign")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--key", "keys", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private trust key file; repeatable.")
def trust_sign(file, keys):
    """Add signatures to a trust file (each key holder in turn).

    \b
    Example:
      federation trust sign keys/tid.trust --key /secure/root-2.key
    """
    from federation.node.keys import load_signer
    from federation.core.trustfile import add_trust_signatures
    _write_file(file, add_trust_signatures(file.read_bytes(), [load_signer(p) for p in keys]))
    click.echo(f"signed {file}")


@trust.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--previous", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The trust version before FILE: also check FILE is a valid rotation from it.")
def trust_check(file, previous):
    """Check a trust file (and optionally a rotation) and print what it trusts.

    Exits 2 on a malformed, contradictory or under-signed file.

    \b
    Example:
      federation trust check keys/tid.trust
      federation trust check new.trust --previous keys/tid.trust
    """
    from federation.trust.rotation import verify_successor
    from federation.core.trustfile import load_trust_file
    t = load_trust_file(file)
    if previous is not None:
        prev = load_trust_file(previous)
        try:
            verify_successor(prev, t.raw)
        except FederationError as e:
            raise InputError(f"{file} is not a valid rotation from {previous}: {e}") from None
    click.echo(f"{file}: ok: trust version {t.version} for {t.origin}")
    click.echo(f"  max staleness: {t.max_staleness} s")
    for k in t.log_keys:
        click.echo(f"  log key:   {k.vkey}")
    click.echo(f"  witnesses ({t.quorum} of {len(t.witness_keys)} required):")
    for k in t.witness_keys:
        click.echo(f"    {k.vkey}")
    click.echo(f"  trust keys ({t.threshold} of {len(t.trust_keys)} sign the next version):")
    for k in t.trust_keys:
        click.echo(f"    {k.vkey}")


@trust.command("publish")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.pass_obj
def trust_publish(home: Home, name, file):
    """Add FILE to the trust chain the publisher serves for feed NAME.

    The first file must verify on its own; each later one must be a valid
    rotation (next version, threshold of old and new trust keys).

    \b
    Example:
      federation trust publish tid keys/tid.trust
    """
    from federation.store.publisher import Publisher
    from federation.trust.rotation import publish_trust
    pub = Publisher(home.publisher_db)
    t = publish_trust(pub.conn, name, file.read_bytes())
    click.echo(f"{name}: now serving trust version {t.version} (trust/latest)")


# ---- cosign ---------------------------------------------------------------------


@click.group()
def cosign():
    """Timestamped cosignatures (tlog-cosignature) for published checkpoints.

    \b
    Example:
      federation cosign run tid --key /secure/tid-cosigner.key --interval 300
    """


@cosign.command("keygen")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private cosigner key (mode 0600).")
def cosign_keygen(name, out):
    """Create an Ed25519 cosigner key NAME (type 0x04) and print its vkey.

    \b
    Example:
      federation cosign keygen witness.platform-a.example --out /secure/witness.key
    """
    from federation.node.keys import write_new_cosigner_key
    click.echo(write_new_cosigner_key(out, name).vkey)


def _witness_specs(specs) -> list[tuple[str, str]]:
    out = []
    for s in specs:
        url, sep, vkey = s.partition("=")
        if not sep:
            raise InputError(f"--witness {s!r}: want URL=VKEY")
        out.append((url, vkey))
    return out


@cosign.command("configure")
@click.argument("name")
@click.option("--key", "keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The publisher's own cosigner key file (its path is stored, never the key); repeatable.")
@click.option("--witness", "witnesses", multiple=True,
              help="A witness as SUBMISSION_PREFIX=VKEY, e.g. http://w:8081/witness=w.example+ab12cd34+BA...")
@click.option("--quorum", type=int,
              help="Cosignatures a new checkpoint needs before it is served (default: the quorum of the feed's "
                   "published trust file, else every cosigner).")
@click.option("--off", is_flag=True, help="Remove the configuration: publishes are served uncosigned again.")
@click.pass_obj
def cosign_configure(home: Home, name, keys, witnesses, quorum, off):
    """Store feed NAME's cosigners so every publish is served only once cosigned.

    With a configuration, `federation publish NAME` commits the new version
    but keeps serving the previous checkpoint until the new one carries the
    quorum of cosignatures (collected right after the commit); mirrors
    requiring a witness quorum therefore accept it at once. If witnesses
    are unreachable the version stays pending until `cosign run` finishes it.
    `cosign run NAME` without --key/--witness uses this configuration.

    \b
    Example:
      federation cosign configure tid --key ~/.federation/private/tid-cosigner.key \\
        --witness 'http://platform-a.example:8081/witness=witness.platform-a.example+5e6f7a8b+BA...' --quorum 2
      federation cosign configure tid --off
    """
    from federation.core.note import parse_vkey
    from federation.trust.cosign import CosigningConfig, load_config, store_config
    from federation.node.keys import load_cosigner
    from federation.store.publisher import Publisher
    pub = Publisher(home.publisher_db)
    if off:
        if keys or witnesses or quorum is not None:
            raise InputError("--off takes no other option")
        store_config(pub, name, None)
        click.echo(f"{name}: cosigning configuration removed; publishes are served at once, uncosigned")
        return
    if not keys and not witnesses:
        cfg = load_config(pub, name)
        if cfg is None:
            raise InputError(f"feed {name!r} has no cosigning configuration; give --key and/or --witness")
        _echo_config(name, cfg, pub)
        return
    paths = tuple(str(Path(k).resolve()) for k in keys)
    origin = pub.feed(name).origin
    for k in paths:
        # refuse a missing, unreadable or group-readable key now, not at publish time
        if load_cosigner(Path(k)).name == origin:
            raise InputError(f"cosigner key {k} is named after the feed's origin {origin!r}: that name is the "
                             "log's own (its signature and timestamp lines); name the cosigner differently")
    specs = tuple(_witness_specs(witnesses))
    for _, vkey in specs:
        if parse_vkey(vkey).name == origin:
            raise InputError(f"witness {vkey} is named after the feed's origin {origin!r}: that name is the log's own")
    # Without --quorum the trust file's quorum applies, read at each round,
    # so a rotation that changes it takes effect without reconfiguring.
    cfg = CosigningConfig(paths, specs, quorum)
    store_config(pub, name, cfg)
    _echo_config(name, cfg, pub)


def _echo_config(name: str, cfg, pub) -> None:
    from federation.store.trust_chain import TrustChain
    trust = TrustChain(pub.conn, name).current()
    quorum = cfg.resolved_quorum(trust.quorum if trust is not None else None)
    how = ("" if cfg.quorum is not None else " (the trust file's quorum, followed as it rotates)" if trust is not None
           else " (every cosigner: no trust file)")
    click.echo(f"{name}: new checkpoints are served once cosigned by {quorum} of "
               f"{len(cfg.keys) + len(cfg.witnesses)} cosigner(s){how}")
    for k in cfg.keys:
        click.echo(f"  key:     {k}")
    for url, vkey in cfg.witnesses:
        click.echo(f"  witness: {url} {vkey}")


def cosign_after_publish(home: Home, name: str, version: int) -> None:
    """``federation publish``'s step for a feed with cosigning configured:
    collect the cosignatures of the pending checkpoint and serve it.

    Exits 3 (witnesses unreachable) or 1 (refused, or too few) with the
    version committed but not served; ``cosign run NAME --once`` finishes it.
    """
    from federation.node.cosigning import cosign_configured
    from federation.core.errors import TransportError
    out = asyncio.run(cosign_configured(home.publisher_db, name))
    if out is None:  # removed between the commit and now: refused while pending, so nothing is pending
        return
    # "cosigned": another process (a running `cosign run`) promoted the pending
    # version first, and this round refreshed the served one: it is served.
    if out.status in ("promoted", "changed", "cosigned"):
        click.echo(f"{name}: version {version}: {out.describe()}")
        return
    click.echo(f"error (pending): {name} version {version} is committed but not served yet: {out.describe()}. "
               f"Mirrors keep the previous version. Finish it with 'federation cosign run {name} --once'.", err=True)
    transport = out.failures and all(isinstance(e, TransportError) for _, e in out.failures)
    sys.exit(3 if transport else 1)


@cosign.command("run")
@click.argument("names", nargs=-1, required=True)
@click.option("--key", "keys", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The publisher's own cosigner key file; repeatable (default: the stored configuration).")
@click.option("--witness", "witnesses", multiple=True,
              help="A witness as SUBMISSION_PREFIX=VKEY, e.g. http://w:8081/witness=w.example+ab12cd34+BA...")
@click.option("--interval", default=300.0, show_default=True,
              help="Seconds between refreshes (keep well under the trust files' max staleness).")
@click.option("--once", is_flag=True,
              help="Refresh once and exit: 1 if a served checkpoint got fewer fresh cosignatures than the quorum, "
                   "its refresh would be refused by the feed's trust file, or a pending checkpoint stays unserved.")
@log_json_option
@click.pass_obj
def cosign_run(home: Home, names, keys, witnesses, interval, once):
    """Collect fresh cosignatures for feeds NAMES, on a schedule, even when nothing changed.

    A pending checkpoint (a publish of a feed with `cosign configure`d
    cosigners whose cosignatures are missing) is cosigned and served first.
    Without --key and --witness each feed's stored configuration is used.
    A cosignature the feed's trust file would not count (it does not
    verify, or is dated in the future: a witness clock running ahead) is
    dropped and reported; the others are served.

    With --once, exits 1 when a feed got fewer fresh cosignatures than its
    quorum, or its note would be refused by its trust file, or a pending
    checkpoint stays unserved; else 0.

    \b
    Example:
      federation cosign run tid --key /secure/tid-cosigner.key \\
        --witness 'http://witness.platform-a.example/witness=witness.platform-a.example+5e6f7a8b+BA...'
      federation cosign run tid --once
    """
    import aiohttp
    from federation.trust.cosign import cosign_feed, load_config, refresh_forever
    from federation.trust.witness_client import WitnessClient
    from federation.node.cosigning import plan
    from federation.node.keys import load_cosigner
    from federation.core.note import parse_vkey
    from federation.store.publisher import Publisher
    from federation.store.trust_chain import TrustChain
    pub = Publisher(home.publisher_db)
    configs = {n: load_config(pub, n) for n in names}
    explicit = bool(keys or witnesses)
    for n, cfg in configs.items():
        if cfg is None and not explicit:
            raise InputError(f"feed {n!r} has no stored cosigning configuration: give at least one --key or "
                             "--witness, or run 'federation cosign configure'")
    cosigners = [load_cosigner(p) for p in keys]
    specs = [(u, parse_vkey(v)) for u, v in _witness_specs(witnesses)]
    trusts = {n: TrustChain(pub.conn, n).current() for n in names}

    def quorum_of(n: str) -> int:
        """Explicit --key/--witness replace the stored cosigners, not the
        quorum: the stored one, else the feed's trust file's, else all of them."""
        trust_quorum = trusts[n].quorum if trusts[n] is not None else None
        if configs[n] is not None:
            return configs[n].resolved_quorum(trust_quorum)
        total = len(cosigners) + len(specs)
        return min(trust_quorum, total) if trust_quorum is not None else total

    async def run():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            clients = [WitnessClient(u, k, session) for u, k in specs]
            plans = {n: (cosigners, clients, quorum_of(n)) if explicit
                     else plan(c, session, trusts[n].quorum if trusts[n] is not None else None)
                     for n, c in configs.items()}
            if once:
                short = 0
                for n in names:
                    out = await cosign_feed(pub, n, *plans[n])
                    click.echo(f"{n}: {out.status}: {out.describe()}")
                    short += not out.ok
                return short
            await refresh_forever(pub, list(names), cosigners, clients, interval, plans=plans)
            return 0

    sys.exit(1 if asyncio.run(run()) else 0)


# ---- witness --------------------------------------------------------------------


@click.group()
def witness():
    """Run a C2SP tlog-witness for other nodes' feeds.

    \b
    Example:
      federation witness serve --key /secure/witness.key --port 8081
    """


@witness.command("add-log")
@click.argument("origin")
@click.option("--vkey", "vkeys", multiple=True, required=True, help="The log's key; repeatable.")
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="This witness's cosigner key file.")
@click.pass_obj
def witness_add_log(home: Home, origin, vkeys, key):
    """Accept checkpoints of log ORIGIN signed by --vkey.

    \b
    Example:
      federation witness add-log clearinghouse.example/feeds/tid \\
        --vkey 'clearinghouse.example/feeds/tid+1a2b3c4d+AW...' --key /secure/witness.key
    """
    from federation.node.keys import load_cosigner
    from federation.trust.witness import Witness
    w = Witness(home.witness_db, load_cosigner(key))
    w.add_log(origin, list(vkeys))
    click.echo(f"witnessing {origin}")


@witness.command("serve")
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="This witness's cosigner key file.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=int)
@log_json_option
@click.pass_obj
def witness_serve(home: Home, key, host, port):
    """Serve POST /witness/add-checkpoint (C2SP tlog-witness).

    \b
    Example:
      federation witness serve --key /secure/witness.key --port 8081
    """
    from federation.net.httpserver import run_app
    from federation.node.keys import load_cosigner
    from federation.net.server import create_app
    from federation.trust.witness import Witness, install_witness
    c = load_cosigner(key)
    w = Witness(home.witness_db, c)
    run_app(create_app([], extensions=[install_witness(w)]), host, port,
            on_start=lambda url: click.echo(f"witness {c.vkey} on {url}/witness/add-checkpoint"))


# ---- log key rotation (registered into the `feed` group) ------------------------


@click.command("rotate-key")
@click.argument("name")
@click.option("--new-key", "new_key", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The new private log key file: created (mode 0600) if missing, never overwritten.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The current private log key (default: the feed's recorded key file, else "
                   "HOME/private/NAME.key).")
@click.option("--prepare", is_flag=True,
              help="Only create --new-key if missing and print its vkey (to list in the next trust version).")
@click.option("--old-key-lost", is_flag=True,
              help="The current key is lost: sign the current checkpoint with the new key alone "
                   "(needs a published trust version listing the new key).")
@click.pass_obj
def feed_rotate_key(home: Home, name, new_key, key_path, prepare, old_key_lost):
    """Switch feed NAME to a new log key; the current checkpoint is signed by both keys.

    Mirrors that trust either key keep accepting the feed. NEW_KEY's path is
    recorded with the feed: from now on `federation publish`, `serve`,
    `export --watch` and `feed refresh` use it without --key. The next
    publish signs with the new key only, which drops the old key's
    signature. If the feed publishes a trust chain, its newest version must
    already list the new key.

    With --old-key-lost the old key is not needed and does not sign: mirrors
    accept the feed again once they hold the trust version listing the new
    key (they fetch it on their next sync). The log is unchanged.

    \b
    Example:
      federation feed rotate-key tid --new-key ~/.federation/private/tid-2.key --prepare
      federation trust new --version 2 --log-key OLD --log-key NEW ... && federation trust publish tid ...
      federation feed rotate-key tid --new-key ~/.federation/private/tid-2.key
      federation publish tid batch.csv      # signed with tid-2.key, the feed's key now
      # the old key is lost: trust N+1 lists the new key, then
      federation feed rotate-key tid --new-key ~/.federation/private/tid-2.key --old-key-lost
    """
    from federation.node.keys import load_signer, write_new_key
    from federation.store.publisher import Publisher
    from federation.store.trust_chain import TrustChain
    pub = Publisher(home.publisher_db)
    feed = pub.feed(name)
    if new_key.exists():
        new = load_signer(new_key)
        click.echo(f"using the existing key {new_key}")
    else:
        new = write_new_key(new_key, feed.origin)
        click.echo(f"created {new_key} (mode 0600; keep it secret)")
    if new.name != feed.origin:
        raise InputError(f"key {new_key} is named {new.name!r}; a log key of {name!r} must be named "
                         f"after the origin {feed.origin!r}")
    if prepare:
        click.echo(f"new vkey: {new.vkey}")
        return
    if new.vkey == feed.vkey:
        raise InputError(f"{new_key} is already the key of feed {name!r}")
    trust = TrustChain(pub.conn, name).current()
    if trust is not None and new.vkey not in {k.vkey for k in trust.log_keys}:
        raise InputError(f"{trust.describe()} does not list {new.vkey}: mirrors would refuse the feed once "
                         "signed by it alone. Publish a trust version listing it first (docs/trust.md)")
    if old_key_lost:
        if trust is None:
            raise InputError(f"feed {name!r} publishes no trust chain: its mirrors trust the lost key alone, "
                             "and nothing they trust can vouch for a new one. They must be given the new vkey "
                             "out of band and follow the feed again (docs/trust.md, 'lost log key')")
        pub.rotate_key(name, None, new, key_file=home.key_record(name, new_key))
        click.echo(f"{name}: rotated to the new log key without the lost one; the current checkpoint is "
                   f"signed by the new key alone\nnew vkey: {new.vkey}\n"
                   f"Mirrors accept it once they hold {trust.describe()}. {new_key} is now the feed's key: "
                   "publish, serve, export --watch and feed refresh use it.")
        return
    old_path = key_path or home.feed_key(name, feed.key_file)
    if not old_path.exists():
        raise InputError(f"the current key {old_path} does not exist; pass --key, or --old-key-lost "
                         "if it is lost (docs/trust.md)")
    old = load_signer(old_path)
    pub.rotate_key(name, old, new, key_file=home.key_record(name, new_key))
    click.echo(f"{name}: rotated to the new log key; the current checkpoint is signed by both keys\n"
               f"new vkey: {new.vkey}\n"
               f"{new_key} is now the feed's key (recorded in {home.publisher_db}): publish, serve, export "
               "--watch and feed refresh use it; the next publish drops the old key's signature.")


# ---- helpers for cli.py's follow --trust and verify --against ---------------------


def follow_trusted(home: Home, name: str, trust_file: Path, urls: list[str], max_age: int | None = None,
                   token_env: str | None = None) -> None:
    from federation.store.mirror import Mirror
    from federation.trust.rotation import follow_with_trust
    from federation.core.trustfile import load_trust_file
    t = load_trust_file(trust_file)
    f = follow_with_trust(Mirror(home.mirror_db), name, t, urls, max_age, token_env)
    click.echo(f"following {f.name} ({f.origin}) from {', '.join(f.urls)} under trust version {t.version} "
               f"({t.quorum} of {len(t.witness_keys)} witnesses, max staleness {t.max_staleness} s)")


def verify_against_command(home: Home, names: list[str], url: str) -> None:
    """Exit 0 when consistent, 1 on a fork (both notes printed), 3 on transport,
    5 when there is no mirror to compare (fail closed)."""
    from federation.sync.gossip import SplitViewError, verify_against
    from federation.store.mirror import Mirror
    mirror = Mirror.existing(home.require().mirror_db)  # read-only: a typo'd --home creates nothing
    names = names or [f.name for f in mirror.all()]
    if len(names) != 1:
        raise InputError("--against compares one feed: name it")
    try:
        r = asyncio.run(verify_against(mirror, names[0], url))
    except SplitViewError as e:
        click.echo(f"{names[0]}: FORK: {e}", err=True)
        click.echo(e.evidence())
        sys.exit(1)
    click.echo(f"{names[0]}: {r.describe()} (checked {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})")


def register(cli) -> None:
    cli.commands["feed"].add_command(feed_rotate_key)
    cli.add_command(trust)
    cli.add_command(cosign)
    cli.add_command(witness)
