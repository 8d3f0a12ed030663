"""Write transactions of the stores: all of a step, or none of it.

A trust rotation step stores trust version N+1 (``store.trust_chain``) and
the mirror's new log keys (``store.mirror.set_trusted_keys``) in one
transaction; a snapshot bootstrap ends its one transaction with the
mirror's change rows and head. The mirror's part refuses to run outside a
transaction, so it can never commit on its own, half of a step. A COMMIT
that fails (``db.write_txn``) leaves no transaction open, and creating a
store's schema never commits a transaction its caller has open.
"""
from __future__ import annotations

import sqlite3

import pytest

from federation.core import entries as E
from federation.core.errors import StorageError
from federation.core.merkle import CompactRange
from federation.core.note import Cosigner, Signer
from federation.core.trustfile import parse_trust, render_trust, sign_trust
from federation.store.db import connect, write_txn
from federation.store.mirror import Mirror, set_trusted_keys
from federation.store.trust_chain import TrustChain
from federation.trust.rotation import follow_with_trust, verify_successor

NAME, ORIGIN = "tid", "example.org/feeds/tid"


WITNESS = Cosigner.generate("witness.example")


def _trust(version: int, log_key: Signer, roots: list[Signer], signers: list[Signer]) -> bytes:
    text = render_trust(ORIGIN, version, 3600, [log_key.vkey], [WITNESS.vkey], 1, [r.vkey for r in roots], len(roots))
    return sign_trust(text, signers)


@pytest.fixture
def rotating(tmp_path):
    """A mirror following NAME under trust version 1, and a valid version 2 with a new log key."""
    roots = [Signer.generate(f"example.org/trust/root-{i}") for i in (1, 2)]
    old, new = Signer.generate(ORIGIN), Signer.generate(ORIGIN)
    m = Mirror(tmp_path / "m.db")
    v1 = parse_trust(_trust(1, old, roots, roots))
    follow_with_trust(m, NAME, v1, ["http://127.0.0.1:1/feeds/tid/"])
    v2 = verify_successor(v1, _trust(2, new, roots, roots))
    yield m, old, new, v2
    m.close()


def test_mirror_writes_of_a_larger_transaction_refuse_to_run_alone(rotating):
    m, old, new, _ = rotating
    before = m.get(NAME)
    seal = E.Seal(1, 0, 0, before.digest)
    with pytest.raises(StorageError, match="outside one"):
        set_trusted_keys(m.conn, NAME, ORIGIN, [new.vkey])
    with pytest.raises(StorageError, match="outside one"):
        m.record_replacement(before.id, 1, 0)
    with pytest.raises(StorageError, match="outside one"):
        m.install_snapshot_head(before, 0, b"note", None, 1, CompactRange(), seal, 0)
    assert m.get(NAME) == before and not m.conn.in_transaction
    assert m.conn.execute("SELECT count(*) FROM versions").fetchone()[0] == 0


def test_a_rotation_step_and_the_mirrors_keys_commit_together(rotating):
    m, old, new, v2 = rotating
    chain = TrustChain(m.conn, NAME)

    # The mirror's write fails (no followed feed of that origin): the trust
    # version is rolled back with it.
    def wrong(conn):
        set_trusted_keys(conn, NAME, "example.org/feeds/other", [new.vkey])

    with pytest.raises(StorageError, match="no followed feed"):
        chain.append(v2, in_txn=wrong)
    assert chain.current().version == 1 and m.get(NAME).vkeys == (old.vkey,)

    chain.append(v2, in_txn=lambda conn: set_trusted_keys(conn, NAME, ORIGIN, [k.vkey for k in v2.log_keys]))
    assert chain.current().version == 2 and m.get(NAME).vkeys == (new.vkey,)


def test_failed_commit_rolls_back_and_the_next_transaction_works(tmp_path):
    conn = connect(tmp_path / "x.db")
    conn.executescript("""
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
    """)
    # A deferred foreign key is checked at COMMIT: the COMMIT itself fails.
    with pytest.raises(sqlite3.IntegrityError):
        with write_txn(conn):
            conn.execute("INSERT INTO child VALUES (42)")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    with write_txn(conn):
        conn.execute("INSERT INTO parent VALUES (1)")
        conn.execute("INSERT INTO child VALUES (1)")
    assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 1
    conn.close()


def test_trust_chain_schema_does_not_commit_an_open_transaction(tmp_path):
    """TrustChain is built on shared connections; creating its tables must
    not commit (or break) a transaction that is open on that connection."""
    from federation.store.db import connect
    from federation.trust.rotation import TrustChain

    conn = connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    TrustChain(conn, "feed").current()
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    # and the tables exist once created outside a rolled-back transaction
    TrustChain(conn, "feed")
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {
        "trust_chain", "trust_freshness"}
    conn.close()
