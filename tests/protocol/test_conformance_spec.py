"""Conformance with published examples and test vectors we did not write.

Every constant here is copied from a public source, named next to it:

* Go's ``golang.org/x/mod/sumdb/note`` package documentation (note.go) and
  tests (note_test.go): the PeterNeumann / EnochRoot keys, note and
  signatures. ``tests/protocol/test_conformance_go.py`` checks that these constants
  still appear verbatim in the installed Go source.
* Go's ``golang.org/x/mod/sumdb/tlog`` tests (note_test.go, tlog_test.go).
* transparency-dev/merkle ``testonly/constants.go`` and
  ``proof/verify_test.go``: the RFC 6962 reference tree of 8 leaves.
* The C2SP specifications signed-note, tlog-checkpoint and tlog-tiles.
* docs/PROTOCOL.md section 4 (our own spec's worked example).
"""
from __future__ import annotations

import base64
import hashlib
import re

import pytest

from federation.core.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint_body
from federation.core.entries import Add, encode
from federation.core.errors import InputError, MalformedError, SignatureError
from federation.core.layout import ENTRIES, encode_index, parse_tile_path, tile_path, tile_width, tiles_for_size
from federation.core.merkle import (CompactRange, EMPTY_ROOT, consistency_proof, inclusion_proof, leaf_hash, node_hash,
                                    root_of, verify_consistency, verify_inclusion)
from federation.core.note import SIG_ED25519, Signer, key_id, open_note, parse_note, parse_vkey, sign_note
from federation.core.tiles import TileBuilder, encode_bundle, parse_bundle, parse_hash_tile

from support.paths import REPO_ROOT


# ---- Go sumdb/note: note.go package doc and note_test.go -------------------------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
             .encode())
PETER_NOTE = PETER_TEXT + b"\n" + PETER_SIG
# note_test.go TestOpen: a second signer, EnochRoot.
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
             .encode())


def test_go_note_vkey_key_id():
    v = parse_vkey(PETER_VKEY)
    assert (v.name, v.key_id, v.sig_type) == ("PeterNeumann", 0xC74F20A3, SIG_ED25519)
    assert key_id("PeterNeumann", SIG_ED25519, v.public_key) == 0xC74F20A3
    assert v.vkey == PETER_VKEY
    e = parse_vkey(ENOCH_VKEY)
    assert (e.name, e.key_id) == ("EnochRoot", 0xAF0CFE78)
    assert e.vkey == ENOCH_VKEY


def test_go_note_private_key_reproduces_vkey():
    signer = Signer.from_private_key_text(PETER_SKEY)
    assert signer.vkey == PETER_VKEY
    assert signer.private_key_text() == PETER_SKEY


def test_go_note_sign_reproduces_the_exact_signature():
    # Ed25519 is deterministic: Go's TestSign expects exactly these bytes.
    signer = Signer.from_private_key_text(PETER_SKEY)
    assert sign_note(PETER_TEXT, [signer]) == PETER_NOTE
    assert signer.sign(PETER_TEXT) == base64.b64decode(PETER_SIG.split(b" ")[2])


def test_go_note_open_verifies_the_example():
    note = open_note(PETER_NOTE, [parse_vkey(PETER_VKEY)])
    assert note.text == PETER_TEXT
    assert [v.vkey for v in note.verified_by] == [PETER_VKEY]
    assert [(s.name, s.key_id) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]


def test_go_note_doubly_signed():
    msg = PETER_TEXT + b"\n" + PETER_SIG + ENOCH_SIG
    both = open_note(msg, [parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)])
    assert [v.name for v in both.verified_by] == ["PeterNeumann", "EnochRoot"]
    # Go TestOpen: "one signature verified, one not" -- the unknown key is ignored.
    one = open_note(msg, [parse_vkey(PETER_VKEY)])
    assert [v.name for v in one.verified_by] == ["PeterNeumann"]
    only_enoch = open_note(msg, [parse_vkey(ENOCH_VKEY)])
    assert [v.name for v in only_enoch.verified_by] == ["EnochRoot"]


def test_go_note_unknown_key_is_rejected():
    with pytest.raises(SignatureError):
        open_note(PETER_NOTE, [parse_vkey(ENOCH_VKEY)])
    with pytest.raises(SignatureError):
        open_note(PETER_NOTE, [])
    with pytest.raises(SignatureError):  # Go: UnverifiedNoteError with no verifiers at all
        open_note(PETER_TEXT + b"\n" + PETER_SIG + ENOCH_SIG, [])


def test_go_note_tampered_text_is_rejected():
    for tampered in (PETER_TEXT.replace(b"cryptography", b"cryptographY"),
                     PETER_TEXT.replace(b"problem is.", b"problem is!"),
                     PETER_TEXT + b"extra line\n"):
        with pytest.raises(SignatureError):
            open_note(tampered + b"\n" + PETER_SIG, [parse_vkey(PETER_VKEY)])


def test_go_note_invalid_signature_is_rejected():
    # note_test.go TestOpen "Invalid signature": ABCD spliced into the base64.
    bad = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(SignatureError):
        open_note(PETER_TEXT + b"\n" + bad, [parse_vkey(PETER_VKEY)])


def test_go_note_duplicate_and_unverified_signatures():
    # note_test.go TestOpen "Duplicated verified and unverified signatures":
    # Go opens it with Peter's key (Enoch's signatures, one corrupt, are unknown).
    enoch_bad = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    msg = PETER_TEXT + b"\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_bad
    note = open_note(msg, [parse_vkey(PETER_VKEY)])
    assert [v.name for v in note.verified_by] == ["PeterNeumann"]


@pytest.mark.parametrize("msg", [
    # note_test.go TestOpen "Invalid encoded message syntax", each one "malformed note".
    PETER_TEXT,
    PETER_TEXT + b"\n",
    PETER_TEXT + b"\n" + PETER_SIG[:-1],
    b"\x01" + PETER_TEXT + b"\n" + PETER_SIG,
    b"\xff" + PETER_TEXT + b"\n" + PETER_SIG,
    PETER_TEXT + b"\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".encode(),
    PETER_TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n",
    # "Check too many signatures": 101 copies.
    PETER_TEXT + b"\n" + PETER_SIG * 101,
], ids=["no-sigs", "blank-no-sigs", "no-final-newline", "control-char", "bad-utf8", "space-in-name",
        "trailing-line", "101-signatures"])
def test_go_note_malformed_messages(msg):
    with pytest.raises(MalformedError):
        open_note(msg, [parse_vkey(PETER_VKEY)])


def test_signed_note_spec_accepts_at_least_16_signatures():
    # c2sp.org/signed-note: verifiers "MUST accept at least up to 16 signatures".
    unknown = [Signer.from_seed(f"witness{i}.example", bytes([i]) * 32) for i in range(15)]
    msg = sign_note(PETER_TEXT, unknown + [Signer.from_private_key_text(PETER_SKEY)])
    assert msg.count("\u2014".encode()) == 16
    assert open_note(msg, [parse_vkey(PETER_VKEY)]).text == PETER_TEXT


def test_signed_note_spec_ignores_keys_sharing_only_name_or_id():
    # "Verifiers MUST ignore signatures from unknown keys, even if they share a
    # name or ID (but not both) with a known key."
    raw = base64.b64decode(PETER_SIG.split(b" ")[2])
    other_id = (1).to_bytes(4, "big")
    same_name = "\u2014 PeterNeumann ".encode() + base64.b64encode(other_id + raw[4:]) + b"\n"
    same_id = "\u2014 PeterNeumannX ".encode() + base64.b64encode(raw[:4] + bytes(64)) + b"\n"
    note = open_note(PETER_TEXT + b"\n" + same_name + same_id + PETER_SIG, [parse_vkey(PETER_VKEY)])
    assert [v.name for v in note.verified_by] == ["PeterNeumann"]
    with pytest.raises(SignatureError):  # and they never count as the trusted signature
        open_note(PETER_TEXT + b"\n" + same_name + same_id, [parse_vkey(PETER_VKEY)])


@pytest.mark.parametrize("vkey", [
    # note_test.go TestNewVerifier: bad keys with adjusted key hashes.
    "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong key length
    "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
    PETER_VKEY.replace("c74f20a3", "c74f20a4"),  # wrong key id
    PETER_VKEY.replace("PeterNeumann", "Peter+Neumann"),
    PETER_VKEY[:-4],
])
def test_go_note_bad_vkeys_are_rejected(vkey):
    with pytest.raises(InputError):
        parse_vkey(vkey)


def test_go_note_base64_excess_padding_is_rejected():
    # c2sp.org/signed-note: "The base64 encoding used throughout is the standard
    # Base 64 encoding specified in RFC 4648, Section 4." Go's NewVerifier,
    # NewSigner and Open reject '=' after a complete 4-character group
    # ("malformed verifier id", "malformed note"); Python's
    # base64.b64decode(validate=True) silently ignores it.
    for vkey in (PETER_VKEY + "=", PETER_VKEY + "=="):
        with pytest.raises(InputError):
            parse_vkey(vkey)
    for skey in (PETER_SKEY + "=", PETER_SKEY + "=="):
        with pytest.raises(InputError):
            Signer.from_private_key_text(skey)
    # An (unknown) signature of 6 bytes encodes without padding; one extra '='.
    line = "\u2014 Other ".encode() + base64.b64encode(b"\x00\x00\x00\x01\x02\x03") + b"=\n"
    with pytest.raises(MalformedError):
        open_note(PETER_TEXT + b"\n" + line + PETER_SIG, [parse_vkey(PETER_VKEY)])


def test_go_note_vkey_manglings_are_rejected():
    # note_test.go TestNewVerifier: every proper substring and every single
    # byte increment of the vkey is rejected by Go; so must it be here.
    b = PETER_VKEY.encode()
    mangled = {b[i:j] for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1) if (i, j) != (0, len(b))}
    mangled |= {b[:i] + bytes([b[i] + 1]) + b[i + 1:] for i in range(len(b))}
    accepted = []
    for m in sorted(mangled):
        try:
            parse_vkey(m.decode())
        except InputError:
            continue
        accepted.append(m)
    assert accepted == []


def test_go_note_private_key_manglings_are_rejected():
    # note_test.go TestNewSigner, same idea for the private key.
    b = PETER_SKEY.encode()
    mangled = {b[i:j] for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1) if (i, j) != (0, len(b))}
    mangled |= {b[:i] + bytes([b[i] + 1]) + b[i + 1:] for i in range(len(b))}
    accepted = []
    for m in sorted(mangled):
        try:
            Signer.from_private_key_text(m.decode())
        except InputError:
            continue
        accepted.append(m)
    assert accepted == []


# ---- c2sp.org/signed-note and c2sp.org/tlog-checkpoint examples ---------------------

SIGNED_NOTE_SPEC_EXAMPLE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed \u00e8 subito sera.\n"
    "\n"
    "\u2014 quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()

CHECKPOINT_SPEC_EXAMPLE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()


def test_signed_note_spec_example_parses():
    # "the text is separated from the signatures by the last empty line"
    note = parse_note(SIGNED_NOTE_SPEC_EXAMPLE)
    assert note.text == "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u00e8 subito sera.\n".encode()
    (sig,) = note.signatures
    raw = base64.b64decode("NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=")
    assert sig.name == "quasimodo.example/salvatore"
    assert sig.key_id == int.from_bytes(raw[:4], "big")
    assert sig.signature == raw[4:] and len(sig.signature) == 64
    assert note.to_bytes() == SIGNED_NOTE_SPEC_EXAMPLE
    with pytest.raises(SignatureError):  # we do not hold Salvatore's key
        open_note(SIGNED_NOTE_SPEC_EXAMPLE, [parse_vkey(PETER_VKEY)])


def test_checkpoint_spec_example_parses():
    note = parse_note(CHECKPOINT_SPEC_EXAMPLE)
    cp = parse_checkpoint_body(note.text)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.body() == note.text
    assert note.signatures[0].name == "example.com/behind-the-sofa"


@pytest.mark.parametrize("body", [
    b"example.com/log\n020852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # leading zero
    b"example.com/log\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
    b"example.com/log\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
    b"example.com/log\n 1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
    b"example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2\n",  # not base64 of 32 bytes
    b"example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n",  # 30 bytes
    b"\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # empty origin
    b"example.com/log\n1\n",
    b"example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",  # no final newline
])
def test_checkpoint_spec_bad_bodies(body):
    with pytest.raises(MalformedError):
        parse_checkpoint_body(body)


def test_checkpoint_spec_size_zero():
    # "with no leading zeroes (unless the tree is empty, in which case the tree size is 0)"
    body = b"example.com/log\n0\n" + base64.b64encode(EMPTY_ROOT) + b"\n"
    assert parse_checkpoint_body(body) == Checkpoint("example.com/log", 0, EMPTY_ROOT)


def test_checkpoint_open_with_go_note_key():
    signer = Signer.from_private_key_text(PETER_SKEY)
    note = Checkpoint("PeterNeumann", 5, leaf_hash(b"x")).sign([signer])
    assert open_checkpoint(note, "PeterNeumann", [parse_vkey(PETER_VKEY)]).checkpoint.size == 5
    with pytest.raises(SignatureError):
        open_checkpoint(note, "PeterNeumannX", [parse_vkey(PETER_VKEY)])


# ---- Go sumdb/tlog fixed vectors ----------------------------------------------

def test_go_tlog_format_tree_golden():
    # tlog/note_test.go TestFormatTree: Go's sumdb tree note is the same
    # three-line body; only the first line (origin) differs by convention.
    golden = b"go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
    h = leaf_hash(b"hello world")  # tlog.RecordHash([]byte("hello world"))
    assert base64.b64encode(h) == b"TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
    assert Checkpoint("go.sum database tree", 123456789012, h).body() == golden
    assert golden.split(b"\n")[1:] == Checkpoint("example.com/log", 123456789012, h).body().split(b"\n")[1:]


@pytest.mark.parametrize("path,want", [
    # tlog_test.go tilePaths, with the height element (always 8 in tlog-tiles) removed
    # and "data" spelled "entries".
    ("tile/5/x123/x456/078", (5, 123456078, 256)),
    ("tile/5/x123/x456/078.p/2", (5, 123456078, 2)),
    ("tile/0/x003/x057/500", (0, 3057500, 256)),
    ("tile/0/001", (0, 1, 256)),
    ("tile/0/001.p/5", (0, 1, 5)),
    ("tile/entries/x003/x057/500", (ENTRIES, 3057500, 256)),
])
def test_go_tlog_tile_paths(path, want):
    assert parse_tile_path(path) == want
    assert tile_path(*want) == path


@pytest.mark.parametrize("path", [
    "tile/5/123/456/078",  # tlog_test.go: elements other than the last need an x
    "tile/-1/123/456/078",
    "tile/data/001",
    "tile/00/001",  # tlog-tiles: no leading zeros in <L>
    "tile/64/001",  # <L> is 0..63
    "tile/0/001.p/256",  # <W> is 1..255
    "tile/0/001.p/0",
    "tile/0/001.p/05",
    "tile/0/x000/001",  # not the canonical encoding of 1
    "tile/0/1234",
    "tile/0/12",
    "tile/0/x1/234",
    "tile/0/001/",
    "tile/0/../001",
])
def test_bad_tile_paths(path):
    with pytest.raises(MalformedError):
        parse_tile_path(path)


# ---- transparency-dev/merkle RFC 6962 reference vectors ------------------------

def _h(s: str) -> bytes:
    return bytes.fromhex(s)


RFC6962_LEAVES = [_h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                  "606162636465666768696a6b6c6d6e6f")]
# testonly/constants.go RootHashes(), indexed by tree size 0..8.
RFC6962_ROOTS = [_h(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# testonly/constants.go NodeHashes(): [level][index] of every complete subtree.
RFC6962_NODES = [
    [_h(x) for x in ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
                     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1")],
    [_h(x) for x in ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0")],
    [_h(x) for x in ("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")],
    [_h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
# testonly/constants.go CompactTrees(): the compact range after each size, largest subtree first.
_N = RFC6962_NODES
RFC6962_COMPACT = [[], [_N[0][0]], [_N[1][0]], [_N[1][0], _N[0][2]], [_N[2][0]], [_N[2][0], _N[0][4]],
                   [_N[2][0], _N[1][2]], [_N[2][0], _N[1][2], _N[0][6]], [_N[3][0]]]
# proof/verify_test.go: (leaf index, tree size, proof); the file lists 1-based leaves.
RFC6962_INCLUSION = [
    (0, 8, [_N[0][1], _N[1][1], _N[2][1]]),
    (5, 8, [_N[0][4], _N[1][3], _N[2][0]]),
    (2, 3, [_N[1][0]]),
    (1, 5, [_N[0][0], _N[1][1], _N[0][4]]),
]
RFC6962_INCLUSION_HEX = {  # the same proofs as the file spells them, to check _N indexing above
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
RFC6962_CONSISTENCY = {  # (size1, size2) -> proof, proof/verify_test.go consistencyProofs
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (6, 7): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (1, 1): [],
}
RFC6962_LEAF_HASHES = [leaf_hash(d) for d in RFC6962_LEAVES]


def _ref_mth(start: int, end: int) -> bytes:
    return root_of(RFC6962_LEAF_HASHES[start:end])


def test_rfc6962_empty_and_leaf_hash():
    assert EMPTY_ROOT == RFC6962_ROOTS[0] == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == RFC6962_ROOTS[1]
    assert node_hash(RFC6962_NODES[0][0], RFC6962_NODES[0][1]) == RFC6962_NODES[1][0]


def test_rfc6962_roots_for_every_size():
    for n in range(9):
        assert root_of(RFC6962_LEAF_HASHES[:n]) == RFC6962_ROOTS[n], n


def test_rfc6962_node_hashes():
    for level, row in enumerate(RFC6962_NODES):
        for i, want in enumerate(row):
            assert _ref_mth(i << level, (i + 1) << level) == want, (level, i)


def test_rfc6962_compact_ranges():
    cr = CompactRange()
    assert cr.hashes == RFC6962_COMPACT[0]
    for n in range(1, 9):
        cr.append(RFC6962_LEAF_HASHES[n - 1])
        assert cr.hashes == RFC6962_COMPACT[n], n
        assert cr.root() == RFC6962_ROOTS[n]


def test_rfc6962_inclusion_proofs():
    for index, size, proof in RFC6962_INCLUSION:
        assert [p.hex() for p in proof] == RFC6962_INCLUSION_HEX[(index, size)]
        assert inclusion_proof(index, size, _ref_mth) == proof
        assert verify_inclusion(RFC6962_LEAF_HASHES[index], index, size, proof, RFC6962_ROOTS[size])


def test_rfc6962_consistency_proofs():
    for (old, new), proof_hex in RFC6962_CONSISTENCY.items():
        proof = [_h(x) for x in proof_hex]
        assert consistency_proof(old, new, _ref_mth) == proof, (old, new)
        assert verify_consistency(old, new, RFC6962_ROOTS[old], RFC6962_ROOTS[new], proof), (old, new)


SOME_HASH = _h("abacaba000000000000000000000000000000000000000000060061e00123456")
U64 = 1 << 64


def test_rfc6962_corrupted_inclusion_proofs_fail():
    # proof/verify_test.go corruptInclusionProof: every probe MUST fail.
    for index, size, proof in RFC6962_INCLUSION:
        leaf, root = RFC6962_LEAF_HASHES[index], RFC6962_ROOTS[size]
        probes = {
            "index-1": ((index - 1) % U64, size, root, leaf, proof),
            "index+1": (index + 1, size, root, leaf, proof),
            "index^2": (index ^ 2, size, root, leaf, proof),
            "size*2": (index, size * 2, root, leaf, proof),
            "size/2": (index, size // 2, root, leaf, proof),
            "wrong leaf": (index, size, root, b"WrongLeaf", proof),
            "empty root": (index, size, EMPTY_ROOT, leaf, proof),
            "random root": (index, size, SOME_HASH, leaf, proof),
            "trailing garbage": (index, size, root, leaf, proof + [b""]),
            "trailing root": (index, size, root, leaf, proof + [root]),
            "preceding garbage": (index, size, root, leaf, [b""] + proof),
            "preceding root": (index, size, root, leaf, [root] + proof),
            "removed component": (index, size, root, leaf, proof[:-1]),
            "inserted component": (index, size, root, leaf, [proof[0], SOME_HASH] + proof[1:]),
            "negative index": (-1, size, root, leaf, proof),
        }
        for i in range(len(proof)):
            wrong = list(proof)
            wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
            probes[f"bit flip {i}"] = (index, size, root, leaf, wrong)
        accepted = [name for name, (i, n, r, lf, p) in probes.items() if verify_inclusion(lf, i, n, p, r)]
        assert accepted == [], (index, size)


def test_rfc6962_corrupted_consistency_proofs_fail():
    # proof/verify_test.go corruptConsistencyProof: every probe MUST fail.
    for (old, new), proof_hex in RFC6962_CONSISTENCY.items():
        proof = [_h(x) for x in proof_hex]
        if not proof:
            continue
        r1, r2 = RFC6962_ROOTS[old], RFC6962_ROOTS[new]
        probes = {
            "size1-1": (old - 1, new, r1, r2, proof),
            "size1+1": (old + 1, new, r1, r2, proof),
            "size1^2": (old ^ 2, new, r1, r2, proof),
            "size2*2": (old, new * 2, r1, r2, proof),
            "size2/2": (old, new // 2, r1, r2, proof),
            "wrong root1": (old, new, b"WrongRoot", r2, proof),
            "wrong root2": (old, new, r1, b"WrongRoot", proof),
            "swapped roots": (old, new, r2, r1, proof),
            "empty proof": (old, new, r1, r2, []),
            "trailing garbage": (old, new, r1, r2, proof + [b""]),
            "trailing root1": (old, new, r1, r2, proof + [r1]),
            "trailing root2": (old, new, r1, r2, proof + [r2]),
            "preceding garbage": (old, new, r1, r2, [b""] + proof),
            "preceding root1": (old, new, r1, r2, [r1] + proof),
            "preceding root2": (old, new, r1, r2, [r2] + proof),
            "preceding proof[0]": (old, new, r1, r2, [proof[0]] + proof),
            "truncated proof": (old, new, r1, r2, proof[:-1]),
        }
        for i in range(len(proof)):
            wrong = list(proof)
            wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
            probes[f"bit flip {i}"] = (old, new, r1, r2, wrong)
        accepted = [name for name, (o, n, a, b, p) in probes.items() if verify_consistency(o, n, a, b, p)]
        assert accepted == [], (old, new)


def test_rfc6962_trivial_consistency():
    # proof/verify_test.go TestVerifyConsistency, the rows this project agrees with.
    r1, r2 = b"don't care 1", b"don't care 2"
    assert not verify_consistency(0, 0, r1, r2, [])
    assert not verify_consistency(1, 1, r1, r2, [])
    assert verify_consistency(0, 0, r1, r1, [])
    assert verify_consistency(1, 1, r2, r2, [])
    assert not verify_consistency(1, 0, r1, r2, [])  # time travel
    assert not verify_consistency(2, 1, r1, r2, [])
    assert not verify_consistency(1, 2, r1, r2, [])  # empty proof
    assert not verify_consistency(0, 0, EMPTY_ROOT, r2, [])
    assert not verify_consistency(1, 1, EMPTY_ROOT, r2, [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    # transparency-dev accepts (0, 1) with *any* first root; this project
    # (and tlog-scales) require the empty tree's hash, which is stricter.
    assert verify_consistency(0, 1, EMPTY_ROOT, r2, [])
    assert not verify_consistency(0, 1, r1, r2, [])


def test_rfc6962_single_entry_inclusion():
    # proof/verify_test.go TestVerifyInclusionSingleEntry
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(b"", 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [], b"")
    for index, size in ((0, 0), (1, 0), (2, 1)):
        assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


# ---- c2sp.org/tlog-tiles ----------------------------------------------------------

def test_tlog_tiles_index_encoding_example():
    # "index 1234067 will be encoded as x001/x234/067"
    assert encode_index(1234067) == "x001/x234/067"
    assert tile_path(1, 1234067) == "tile/1/x001/x234/067"
    assert tile_path(0, 1234067, 8) == "tile/0/x001/x234/067.p/8"
    assert tile_path(ENTRIES, 1234067) == "tile/entries/x001/x234/067"
    assert parse_tile_path("tile/entries/x001/x234/067.p/255") == (ENTRIES, 1234067, 255)
    assert [encode_index(n) for n in (0, 7, 999, 1000, 1001, 999999, 1000000)] == [
        "000", "007", "999", "x001/000", "x001/001", "x999/999", "x001/x000/000"]


def test_tlog_tiles_size_70000_example():
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one
    # partial level 0 tile of width 112, one full level 1 tile, one partial
    # level 1 tile of width 17, and one partial level 2 tile of width 1."
    tiles = tiles_for_size(70000)
    by_level: dict[int, list[tuple[int, int]]] = {}
    for level, index, width in tiles:
        by_level.setdefault(level, []).append((index, width))
    assert sorted(by_level) == [0, 1, 2]
    assert by_level[0] == [(i, 256) for i in range(273)] + [(273, 112)]
    assert by_level[1] == [(0, 256), (1, 17)]
    assert by_level[2] == [(0, 1)]
    assert len(tiles) == 273 + 1 + 1 + 1 + 1


def test_tlog_tiles_size_256_example():
    # "a tree of size 256 will be represented by a full level 0 tile and a
    # partial level 1 tile of width 1."
    assert tiles_for_size(256) == [(0, 0, 256), (1, 0, 1)]


def test_tlog_tiles_partial_width_formula():
    # "The partial tile at level l for a tree of size s has floor(s / 256**l) mod 256 entries."
    for s in (1, 255, 256, 257, 65535, 65536, 65537, 70000, 16777216 + 5):
        for level, index, width in tiles_for_size(s):
            if width != 256:
                assert width == (s // 256 ** level) % 256
                assert index == (s // 256 ** level) // 256
            assert tile_width(level, index, s) == width
        assert all(w > 0 for _, _, w in tiles_for_size(s))  # "Empty tiles MUST NOT be served."


def test_tlog_tiles_formal_tile_definition():
    # "the n-th tile at level l ... is the sequence of the Merkle Tree Hashes
    #  MTH(D[(n * 256 + i) * 256**l : (n * 256 + i + 1) * 256**l])", and a
    # partial tile holds the first `width` of them.
    size = 70000
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    tb = TileBuilder(0, {})
    tiles = tb.add_leaves(leaves)
    tiles.update(tb.partials())
    assert sorted(tiles) == sorted(tiles_for_size(size))
    for (level, n, width), data in tiles.items():
        got = parse_hash_tile(data, width)
        span = 256 ** level
        for i in range(width):
            lo, hi = (n * 256 + i) * span, (n * 256 + i + 1) * span
            want = leaves[lo] if level == 0 else root_of(leaves[lo:hi])
            assert got[i] == want, (level, n, i)


def test_tlog_tiles_entry_bundle_format():
    # "Entry bundles are sequences of big-endian uint16 length-prefixed log entries."
    entries = [b"", b"a", b"x" * 300, bytes(range(256)) * 16]
    bundle = encode_bundle(entries)
    assert bundle == (b"\x00\x00" + b"\x00\x01a" + b"\x01\x2c" + b"x" * 300
                      + b"\x10\x00" + bytes(range(256)) * 16)
    assert parse_bundle(bundle, 4) == entries
    with pytest.raises(MalformedError):
        parse_bundle(bundle, 3)
    with pytest.raises(MalformedError):
        parse_bundle(bundle[:-1], 4)


# ---- docs/PROTOCOL.md section 4 worked example ----------------------------------

PROTOCOL_ADD_EXAMPLE_HEX = """
87 a1 76 01 a2 6f 70 a3 61 64 64 a4 74 79 70 65 a3 6d 64 35 a4 68 61 73 68
c4 10 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 a4 63 61 73 65 a6 63
61 73 65 2d 31 a6 6c 61 62 65 6c 73 91 a4 63 73 61 6d a4 74 69 6d 65 ce 65
53 f1 00
"""


def test_protocol_doc_add_example():
    want = bytes.fromhex(PROTOCOL_ADD_EXAMPLE_HEX)
    assert len(want) == 78
    assert encode(Add("md5", bytes(16), "case-1", ("csam",), 1700000000)) == want
    doc = REPO_ROOT / "docs" / "PROTOCOL.md"
    flat = re.sub(r"\s+", " ", doc.read_text())
    assert re.sub(r"\s+", " ", PROTOCOL_ADD_EXAMPLE_HEX.strip()) in flat, "docs/PROTOCOL.md example changed"
