"""Standard Webhooks secrets: the whsec_ form, signatures a stock receiver accepts, and old hex secrets migrated."""
from __future__ import annotations

import base64
import sqlite3
import time

import pytest
import standardwebhooks
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.errors import InputError
from federation.core.webhook_signature import new_secret, parse_secret, sign_headers, verify
from federation.store.platform import PlatformStore

OLD_SCHEMA = """CREATE TABLE webhooks (name TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, feed TEXT,
    cursor INTEGER NOT NULL DEFAULT 0, inflight_first INTEGER, inflight_last INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, last_status INTEGER, last_error TEXT, delivered INTEGER NOT NULL DEFAULT 0)"""


def test_new_secrets_are_whsec_base64_of_32_bytes():
    s = new_secret()
    assert s.startswith("whsec_") and len(base64.b64decode(s[6:], validate=True)) == 32
    assert new_secret() != s


def test_signed_headers_verify_with_the_library_and_reject_tampering_and_replay():
    secret, body, now = new_secret(), b'{"changes":[]}', int(time.time())
    headers = sign_headers(secret, "mod:1-3", now, body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    standardwebhooks.Webhook(secret).verify(body, headers)  # raises if not
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(new_secret(), headers, body)
    assert not verify(secret, {**headers, "webhook-id": "mod:1-4"}, body)
    assert not verify(secret, sign_headers(secret, "mod:1-3", now - 600, body), body)  # too old: replay
    for bad in ("soon", "1e400", "-99999999999999999999"):
        assert not verify(secret, {**headers, "webhook-timestamp": bad}, body)
    for bad in ("v1", "v1,%%%", "", "v2," + headers["webhook-signature"][3:]):
        assert not verify(secret, {**headers, "webhook-signature": bad}, body)


@pytest.mark.parametrize("bad", ["whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 8).decode(),
                                 "whsec_" + base64.b64encode(b"x" * 65).decode(), "ab" * 8, "zz" * 32, "a" * 10_000,
                                 "secret"])
def test_bad_secrets_are_input_errors(bad):
    with pytest.raises(InputError):
        parse_secret(bad)


def test_an_old_hex_secret_keeps_its_key_bytes():
    hex_secret = "ab" * 32
    migrated = parse_secret(hex_secret)
    assert migrated == "whsec_" + base64.b64encode(bytes.fromhex(hex_secret)).decode()
    assert parse_secret(migrated) == migrated


def test_platform_db_from_an_older_node_has_its_hex_secrets_migrated(tmp_path):
    path = tmp_path / "platform.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_SCHEMA)
        conn.execute("INSERT INTO webhooks (name, url, secret) VALUES ('mod', 'http://127.0.0.1:9/h', ?)",
                     ("0f" * 32,))
    store = PlatformStore(path)
    hook = store.webhook("mod")
    assert hook.secret == "whsec_" + base64.b64encode(b"\x0f" * 32).decode()
    store.close()
    assert PlatformStore(path).webhook("mod").secret == hook.secret  # idempotent


def test_cli_takes_a_secret_file_and_refuses_a_bad_one(deployment, tmp_path):
    home = str(deployment.root)
    good, bad = tmp_path / "good", tmp_path / "bad"
    secret = new_secret()
    good.write_text(secret + "\n")
    bad.write_text("not a secret\n")
    r = CliRunner().invoke(cli, ["--home", home, "platform", "webhook", "add", "h1", "http://127.0.0.1:9/x",
                                 "--secret-file", str(good)])
    assert r.exit_code == 0, r.output
    assert PlatformStore(deployment.root / "platform.db").webhook("h1").secret == secret
    r = CliRunner().invoke(cli, ["--home", home, "platform", "webhook", "add", "h2", "http://127.0.0.1:9/x",
                                 "--secret-file", str(bad)])
    assert r.exit_code == 2 and "whsec_" in r.output
