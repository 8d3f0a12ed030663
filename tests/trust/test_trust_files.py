"""Trust files: strict parsing refuses malformed or contradictory files with a
precise InputError; the checked-in examples parse; cosignatures match the spec."""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation.core.errors import InputError
from federation.core.note import Cosigner, Signer, cosigned_message, parse_note
from federation.core.trustfile import load_trust_file, parse_trust, sign_trust

from support.cli import run_cli
from support.paths import REPO_ROOT
from support.trust_world import trust_bytes

ORIGIN = "example.org/feeds/t"
REPO = REPO_ROOT


@pytest.fixture
def keys():
    return dict(log=Signer.generate(ORIGIN), w=[Cosigner.generate(f"w{i}.example") for i in (1, 2)],
                roots=[Signer.generate(f"example.org/trust/r{i}") for i in (1, 2)])


def good(keys, **kw) -> bytes:
    return trust_bytes([keys["log"]], keys["w"], keys["roots"], keys["roots"], **kw)


def load(tmp_path, data: bytes):
    p = tmp_path / "t.trust"
    p.write_bytes(data)
    return load_trust_file(p)


def resign(keys, text: str) -> bytes:
    return sign_trust(text.encode(), keys["roots"])


def test_good_file_round_trips(tmp_path, keys):
    t = load(tmp_path, good(keys))
    assert (t.origin, t.version, t.quorum, t.threshold, t.max_staleness) == (ORIGIN, 1, 2, 2, 3600)
    assert [k.vkey for k in t.witness_keys] == [w.vkey for w in keys["w"]]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("quorum = 2", "quorum = 3"), "witnesses.quorum is 3 with 2 witness key(s)"),
    (lambda s: s.replace("quorum = 2", "quorum = 0"), "witnesses.quorum is 0"),
    (lambda s: s.replace("quorum = 2", "quorum = true"), "witnesses.quorum must be an integer"),
    (lambda s: s.replace("threshold = 2", "threshold = 3"), "trust_keys.threshold is 3 with 2 trust key(s)"),
    (lambda s: s.replace("version = 1", "version = 0"), "version must be at least 1"),
    (lambda s: s.replace("max_staleness_seconds = 3600", "max_staleness_seconds = -5"), "max_staleness_seconds"),
    (lambda s: s.replace('format = "federation-trust/v1"', 'format = "v2"'), "format must be"),
    (lambda s: s + "extra = 1\n", "unknown field(s): extra"),
    (lambda s: s.replace("[witnesses]\n", "[witnesses]\nmode = 'x'\n"), "[witnesses] has unknown field(s): mode"),
    (lambda s: s.replace("version = 1", "version = 1\nversion = 2"), "not valid TOML"),
    (lambda s: s.replace(f'origin = "{ORIGIN}"', 'origin = "other.example/log"'), "is not named after the origin"),
    # the origin rules of docs/PROTOCOL.md section 3, as in a checkpoint
    (lambda s: s.replace(f'origin = "{ORIGIN}"', 'origin = "caf\u00e9.example/log"'), "is not a checkpoint origin"),
    (lambda s: s.replace(f'origin = "{ORIGIN}"', 'origin = "a+b"'), "is not a checkpoint origin"),
    (lambda s: s.replace(f'origin = "{ORIGIN}"', 'origin = "cosignature/v1"'), "is reserved"),
    (lambda s: s.replace(f'origin = "{ORIGIN}"', 'origin = ""'), "is not a checkpoint origin"),
])
def test_malformed_or_contradictory_files_are_refused(tmp_path, keys, edit, message):
    text = parse_note(good(keys)).text.decode()
    with pytest.raises(InputError) as e:
        load(tmp_path, resign(keys, edit(text)))
    assert message in str(e.value) and "t.trust" in str(e.value)


def test_key_in_two_roles_is_contradictory(tmp_path, keys):
    seed = os.urandom(32)
    keys["log"] = Signer.from_seed(ORIGIN, seed)
    text = parse_note(good(keys)).text.decode()
    # The log key's public bytes reused as a trust key under another name.
    reused = Signer.from_seed("example.org/trust/r3", seed)
    r1 = keys["roots"][1].vkey
    text = text.replace(f'  "{r1}",\n', f'  "{r1}",\n  "{reused.vkey}",\n')
    with pytest.raises(InputError, match="appears in log_keys and trust_keys.keys"):
        load(tmp_path, resign(keys, text))


def test_duplicate_key_and_wrong_type_are_refused(tmp_path, keys):
    text = parse_note(good(keys)).text.decode()
    w0 = keys["w"][0].vkey
    with pytest.raises(InputError, match="listed twice"):
        load(tmp_path, resign(keys, text.replace(f'  "{w0}",\n', f'  "{w0}",\n  "{w0}",\n')))
    with pytest.raises(InputError, match=r"must have type 0x04"):
        load(tmp_path, resign(keys, text.replace(w0, keys["roots"][0].vkey.replace("r1", "r1", 1))))


def test_signatures_are_required(tmp_path, keys):
    data = good(keys)
    with pytest.raises(InputError, match="signed by 1 of its own trust keys, needs 2"):
        load(tmp_path, sign_trust(parse_note(data).text, keys["roots"][:1]))
    flipped = bytearray(data)
    flipped[-10] ^= 1  # inside the last signature's base64
    with pytest.raises(InputError):
        load(tmp_path, bytes(flipped))
    with pytest.raises(InputError, match="cannot read trust file"):
        load_trust_file(tmp_path / "missing.trust")


def test_checked_in_example_trust_files_parse():
    files = sorted((REPO / "keys").glob("*.trust"))
    assert files, "keys/ should hold an example trust file"
    for f in files:
        t = load_trust_file(f)
        assert "PRIVATE" not in f.read_text()
        assert t.quorum >= 1


def test_cosignature_is_the_spec_message_and_layout():
    """tlog-cosignature: key ID over type 0x04; signature = u64 BE time || Ed25519
    over "cosignature/v1\\ntime <T>\\n" || note text."""
    c = Cosigner.generate("witness.example.com/w1")
    text = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    sig = c.cosign(text, 1679315147)
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big") and len(sig.signature) == 72
    msg = b"cosignature/v1\ntime 1679315147\n" + text
    assert cosigned_message(text, 1679315147) == msg
    Ed25519PublicKey.from_public_bytes(c.verifier.public_key).verify(sig.signature[8:], msg)
    assert c.verifier.verify(text, sig.signature)
    assert not c.verifier.verify(text, (1 << 63).to_bytes(8, "big") + sig.signature[8:])
    assert parse_trust  # imported for the example-file test


@pytest.mark.timeout(90)
async def test_trust_new_refuses_a_quorum_no_set_of_witnesses_can_meet(tmp_path):
    """Mirrors count one vote per witness *name* (a witness listed with two
    keys while it rotates counts once). ``trust new`` checks the quorum
    against the number of keys: two keys of one witness and ``--quorum 2``
    make a valid-looking file that no checkpoint can ever satisfy, so
    publishing it as version N+1 halts the feed for every mirror."""
    keys = tmp_path / "keys"
    keys.mkdir()
    code, root, err = await run_cli("trust", "keygen", "example.org/trust/root-1", "--out", str(keys / "r1.key"))
    assert code == 0, err
    old, new = Cosigner.generate("witness-1.example"), Cosigner.generate("witness-1.example")
    code, out, err = await run_cli("trust", "new", "--origin", ORIGIN, "--log-key", Signer.generate(ORIGIN).vkey,
                                   "--witness", old.vkey, "--witness", new.vkey, "--quorum", "2",
                                   "--trust-key", root.strip(), "--threshold", "1", "--sign", str(keys / "r1.key"),
                                   "-o", str(tmp_path / "t.trust"))
    assert code == 2, f"wrote a trust file whose quorum of 2 only one witness can vote for: {out}"
