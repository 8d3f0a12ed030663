"""A node's ``[[follow]]`` under a trust file keeps the file's guarantees:
with ``vkeys`` given as well, and when the trust file is added to the config
of a feed the node already follows.

Real parts throughout: publishers with keys generated here, aiohttp servers
on 127.0.0.1, SQLite files under tmp_path, and the CLI as a user runs it.
"""
from __future__ import annotations

import pytest

from federation.core.note import Cosigner, Signer
from federation.node.home import Home
from federation.trust.rotation import publish_trust

from support.feeds import make_feed
from support.loopback import Servers, bounded
from support.trust_world import trust_bytes

pytestmark = pytest.mark.timeout(120)


# ---- 3. members-only feeds never leak -------------------------------------------------


# ---- 4. hostile input never kills a follower ------------------------------------------


# ---- 1. a matcher never answers from a mirror it cannot stand behind -----------------


# ---- 2. freshness without witnesses ---------------------------------------------------


async def test_a_node_follow_with_vkeys_and_a_trust_file_keeps_the_trust_files_guarantees(tmp_path):
    from federation.core.errors import VerificationError
    from federation.store.mirror import Mirror
    from federation.node.config import parse_config
    from federation.node.assembly import prepare_mirror
    from federation.net.server import PublisherSource, create_app
    from federation.sync.orchestrator import sync_once
    from federation.trust.rotation import install_trust_routes
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    feed.publish_version()  # never cosigned by any witness
    roots = [Signer.generate("clearinghouse.example/trust/root")]
    trust = tmp_path / "tid.trust"
    trust.write_bytes(trust_bytes([feed.signer], [Cosigner.generate("w.example")], roots, roots, quorum=1,
                                  threshold=1, max_staleness=3600, origin=feed.origin))
    # The publisher serves its trust chain, as 'federation serve' does (net.readside):
    # a mirror under a trust file fetches trust/latest first, and a 404 there is a
    # transport failure before the quorum is ever checked.
    publish_trust(feed.pub.conn, "tid", trust.read_bytes())
    home = Home(tmp_path / "platform")
    servers = Servers()
    try:
        url = await servers.start(create_app([PublisherSource(feed.path)],
                                             extensions=[install_trust_routes([feed.path])])) + "/feeds/tid/"
        cfg = parse_config(f'[[follow]]\nname = "tid"\norigin = "{feed.origin}"\nvkeys = ["{feed.signer.vkey}"]\n'
                           f'trust = "{trust}"\nurls = ["{url}"]\n')
        prepare_mirror(home, cfg)  # what 'serve --config' does first
        m = Mirror(home.mirror_db)
        try:
            assert m.get("tid").max_age == 3600, "docs/node.md: max_age defaults to the trust file's max_staleness"
            with pytest.raises(VerificationError):  # a checkpoint no witness cosigned: quorum not met
                await bounded(sync_once(m, "tid"))
        finally:
            m.close()
    finally:
        await servers.close()
        feed.pub.close()


async def test_a_trust_file_added_to_a_followed_feeds_config_puts_it_under_the_file(tmp_path):
    """A feed a node followed with vkeys alone, whose config then gains a
    trust file: from the next start it syncs under the file's policy (before:
    the existing follow kept syncing without any quorum)."""
    from federation.node.config import parse_config
    from federation.node.assembly import prepare_mirror
    from federation.store.mirror import Mirror
    from federation.trust.rotation import policy_for
    feed = make_feed(tmp_path / "pub.db", "tid", access="public")
    roots = [Signer.generate("clearinghouse.example/trust/root")]
    trust = tmp_path / "tid.trust"
    trust.write_bytes(trust_bytes([feed.signer], [Cosigner.generate("w.example")], roots, roots, quorum=1,
                                  threshold=1, max_staleness=3600, origin=feed.origin))
    home = Home(tmp_path / "platform")
    url = "http://127.0.0.1:9/feeds/tid/"
    plain = f'[[follow]]\nname = "tid"\norigin = "{feed.origin}"\nvkeys = ["{feed.signer.vkey}"]\nurls = ["{url}"]\n'
    prepare_mirror(home, parse_config(plain))
    m = Mirror(home.mirror_db)
    assert policy_for(m, "tid") is None
    m.close()
    prepare_mirror(home, parse_config(plain + f'trust = "{trust}"\n'))
    m = Mirror(home.mirror_db)
    try:
        assert policy_for(m, "tid") is not None, "the config's trust file is not in force"
        assert list(m.get("tid").vkeys) == [feed.signer.vkey]
    finally:
        m.close()
        feed.pub.close()
