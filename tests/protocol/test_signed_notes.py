"""Signed notes and checkpoints: parsing, signing and rejection (pure)."""
import base64

import pytest

from federation.core.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint_body
from federation.core.errors import InputError, MalformedError, SignatureError
from federation.core.note import Signer, open_note, parse_note, parse_vkey, sign_note

ORIGIN = "example.org/feeds/t"


@pytest.fixture
def signer():
    return Signer.generate(ORIGIN)


def test_sign_and_open_roundtrip(signer):
    note = sign_note(b"hello\nworld\n", [signer])
    opened = open_note(note, [signer.verifier])
    assert opened.text == b"hello\nworld\n"
    assert opened.verified_by == (signer.verifier,)


def test_vkey_roundtrip_and_key_id_check(signer):
    v = parse_vkey(signer.vkey)
    assert v == signer.verifier
    name, kid, blob = signer.vkey.split("+", 2)
    wrong = f"{name}+{(int(kid, 16) ^ 1):08x}+{blob}"
    with pytest.raises(InputError, match="key ID does not match"):
        parse_vkey(wrong)
    with pytest.raises(InputError):
        parse_vkey("no-plus-signs")


def test_private_key_text_roundtrip(signer):
    again = Signer.from_private_key_text(signer.private_key_text())
    assert again.vkey == signer.vkey
    assert sign_note(b"x\n", [again]) == sign_note(b"x\n", [signer])  # Ed25519 is deterministic


def test_unknown_key_only_is_rejected(signer):
    other = Signer.generate(ORIGIN)
    note = sign_note(b"x\n", [other])
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        open_note(note, [signer.verifier])


def test_unknown_signatures_are_ignored(signer):
    other = Signer.generate("someone.else/key")
    note = sign_note(b"x\n", [other, signer])
    assert open_note(note, [signer.verifier]).verified_by == (signer.verifier,)


def test_bad_signature_by_known_key_rejects_whole_note(signer):
    note = bytearray(sign_note(b"abc\n", [signer]))
    note[0:3] = b"abd"
    with pytest.raises(SignatureError, match="does not verify"):
        open_note(bytes(note), [signer.verifier])


@pytest.mark.parametrize("data, msg", [
    (b"no newline", "end with a newline"),
    (b"text\n", "no blank line"),
    (b"text\n\n", "no signature lines"),
    (b"text\n\nnot a signature\n", "malformed signature line"),
    (b"t\x01xt\n\n\xe2\x80\x94 a AAAAAAA=\n", "control character"),
    (b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n", "UTF-8"),
    (b"text\n\n\xe2\x80\x94 a !!!!\n", "base64"),
    (b"x" * 70000 + b"\n", "limit"),
])
def test_malformed_notes(data, msg):
    with pytest.raises(MalformedError, match=msg):
        parse_note(data)


def test_checkpoint_roundtrip(signer):
    cp = Checkpoint(ORIGIN, 12345, bytes(range(32)))
    signed = open_checkpoint(cp.sign([signer]), ORIGIN, [signer.verifier])
    assert signed.checkpoint == cp
    assert cp.body() == f"{ORIGIN}\n12345\n{base64.b64encode(bytes(range(32))).decode()}\n".encode()


def test_checkpoint_wrong_origin(signer):
    cp = Checkpoint("other.example/log", 1, bytes(32)).sign([signer])
    with pytest.raises(SignatureError, match="origin"):
        open_checkpoint(cp, ORIGIN, [signer.verifier])


@pytest.mark.parametrize("body, msg", [
    (b"o\n1\n", "lines"),
    (b"o\n01\n" + base64.b64encode(bytes(32)) + b"\n", "canonical"),
    (b"o\n-1\n" + base64.b64encode(bytes(32)) + b"\n", "canonical"),
    (b"o\n1\n" + base64.b64encode(bytes(31)) + b"\n", "32"),
    (b"o\n1\n" + base64.b64encode(bytes(32)) + b"\nextension\n", "extension"),
    (b"o o\n1\n" + base64.b64encode(bytes(32)) + b"\n", "origin"),
])
def test_malformed_checkpoint_bodies(body, msg):
    with pytest.raises(MalformedError, match=msg):
        parse_checkpoint_body(body)
