"""Plain helpers of the tests, imported normally (``from support.feeds import make_feed``).

Fixtures are not here: they live in the ``conftest.py`` of the directory that
uses them (``tests/conftest.py`` for those shared by several features), where
pytest finds them. These modules hold what fixtures and tests call:

* ``loopback``      -- run aiohttp apps on 127.0.0.1 with ephemeral ports; time bounds
* ``feeds``         -- publisher feeds with generated keys, operations, mirrors following them
* ``mirror_state``  -- what a mirror stores, bounded syncs, syncs that must fail and change nothing
* ``tamper``        -- a tampering HTTP proxy and its rules, forged logs, flipped bytes
* ``clearinghouse`` -- a publisher home made by the CLI, and the CLI run with a home
* ``trust_world``   -- a publisher with a trust file and three witnesses on loopback
* ``cli``           -- ``federation`` as a subprocess that does not block the event loop
* ``deployment``    -- publisher -> mirror -> platform node on loopback
* ``images``        -- generated images and their PDQ hashes
* ``fuzz``, ``fuzz_seeds`` -- Hypothesis settings, the "only our errors" check, valid seeds
* ``system_tools``  -- tests that need Go or nginx: fail under CI, skip with a hint elsewhere
"""
