"""Cross-checks against Go's golang.org/x/mod/sumdb/note and sumdb/tlog.

``tests/go/conformance.go`` is built once per session (GOPATH mode, against
Debian's golang-golang-x-mod-dev) and answers batches of JSON requests; see
its header for the protocol. Go is required: without it these tests fail
(CI installs golang-go and golang-golang-x-mod-dev), they never skip.

Where Go and this project deliberately differ, the difference is listed in
a ``*_DIVERGENCES`` table with its reason, and the tests assert that the set
of disagreements is exactly that table: a new disagreement fails, and so does
a documented one that went away.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.core import entries as E
from federation.core.checkpoint import Checkpoint, parse_checkpoint_body
from federation.core.errors import InputError, MalformedError, SignatureError
from federation.core.layout import ENTRIES, parse_tile_path, tile_path, tiles_for_size
from federation.core.merkle import (CompactRange, EMPTY_ROOT, consistency_proof, inclusion_proof, leaf_hash,
                                    verify_consistency, verify_inclusion)
from federation.core.note import (SIG_COSIGNATURE_V1, SIG_ED25519, Signer, key_id, open_note, parse_note, parse_vkey,
                                  sign_note)
from federation.core.tiles import TileBuilder, TileHashes, parse_bundle, parse_hash_tile
from federation.store.publisher import Publisher

from support.paths import TESTS_DIR
from support.system_tools import require_system_tool

GO_SRC = TESTS_DIR / "go" / "conformance.go"
GOPATH = os.environ.get("FEDERATION_GOPATH", "/usr/share/gocode")
X_MOD_SUMDB = Path(GOPATH) / "src" / "golang.org" / "x" / "mod" / "sumdb"
INSTALL_HINT = ("install Go and Debian's golang.org/x/mod source: "
                "apt-get install golang-go golang-golang-x-mod-dev")

# Go's note.go package documentation / note_test.go (also in test_conformance_spec.py).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
             .encode())
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
             .encode())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


@dataclass
class GoTool:
    binary: Path

    def run(self, *requests: dict) -> list[dict]:
        proc = subprocess.run([str(self.binary)], input=json.dumps(list(requests)).encode(),
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, f"Go conformance tool failed ({proc.returncode}): {proc.stderr.decode()}"
        out = json.loads(proc.stdout)
        assert len(out) == len(requests)
        for resp in out:
            assert resp.get("kind") != "panic", resp
        return out

    def one(self, request: dict) -> dict:
        return self.run(request)[0]


@pytest.fixture(scope="session")
def go(tmp_path_factory) -> GoTool:
    go_bin = shutil.which("go")
    require_system_tool(go_bin is not None, "the Go toolchain ('go')", INSTALL_HINT)
    require_system_tool((X_MOD_SUMDB / "note" / "note.go").is_file() and (X_MOD_SUMDB / "tlog" / "tlog.go").is_file(),
                        f"golang.org/x/mod/sumdb under {X_MOD_SUMDB}",
                        INSTALL_HINT + " (or point FEDERATION_GOPATH at a GOPATH holding it)")
    out = tmp_path_factory.mktemp("go") / "conformance"
    env = {**os.environ, "GOPATH": GOPATH, "GO111MODULE": "off", "GOFLAGS": "", "CGO_ENABLED": "0"}
    if "GOCACHE" not in os.environ and not os.access(Path.home(), os.W_OK):
        env["GOCACHE"] = str(tmp_path_factory.mktemp("gocache"))
    proc = subprocess.run([go_bin, "build", "-o", str(out), GO_SRC.name], cwd=GO_SRC.parent, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"go build of {GO_SRC} failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return GoTool(out)


# ---- the Go source really says what we copied -------------------------------------

def test_go_source_has_the_constants_we_copied():
    if not (X_MOD_SUMDB / "note" / "note.go").is_file():
        pytest.fail(f"{X_MOD_SUMDB}/note/note.go not found: {INSTALL_HINT}", pytrace=False)
    doc = (X_MOD_SUMDB / "note" / "note.go").read_text()
    tests = (X_MOD_SUMDB / "note" / "note_test.go").read_text()
    for const in (PETER_VKEY, PETER_SKEY, PETER_SIG.decode().strip(), ENOCH_SIG.decode().strip()):
        assert const in doc, const
    for const in (PETER_VKEY, PETER_SKEY, ENOCH_VKEY, PETER_SIG.decode().strip(), ENOCH_SIG.decode().strip()):
        assert const in tests, const
    assert '"If you think cryptography is the answer to your problem,\\n" +' in tests
    assert "\"then you don't know what your problem is.\\n\"" in tests
    tlog_notes = (X_MOD_SUMDB / "tlog" / "note_test.go").read_text()
    assert 'golden := "go.sum database tree\\n123456789012\\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\\n"' in tlog_notes


# ---- signed notes ---------------------------------------------------------------

TEXTS = [
    PETER_TEXT,
    b"\n",
    b"a\n\nb\n",  # blank line inside the text
    b"a\n\n",  # text ending in a blank line
    "ed \u00e8 subito sera.\n\u2014 not a signature line\n".encode(),
    "C1 control \u0085 and DEL \x7f and U+FFFD \ufffd and U+2028 \u2028.\n".encode(),
    Checkpoint("example.com/log", 123456789012, leaf_hash(b"hello world")).body(),
    b"".join(b"line %d\n" % i for i in range(2000)),
]


def python_signers() -> list[Signer]:
    return [Signer.from_seed("example.com/log", bytes(range(32))),
            Signer.from_seed("witness.example/w1", bytes(32)),
            Signer.from_seed("\u00fcn\u00efcode.example", b"\x07" * 32)]


def test_go_reproduces_the_doc_example(go):
    resp = go.one({"op": "sign", "skeys": [PETER_SKEY], "text": b64(PETER_TEXT)})
    assert resp["ok"], resp
    assert unb64(resp["msg"]) == PETER_TEXT + b"\n" + PETER_SIG
    resp = go.one({"op": "open", "vkeys": [PETER_VKEY], "msg": b64(PETER_TEXT + b"\n" + PETER_SIG)})
    assert resp["ok"] and unb64(resp["text"]) == PETER_TEXT


def test_python_signs_byte_for_byte_like_go(go):
    ours = python_signers()
    gen = go.one({"op": "generate", "name": "EnochRoot"})
    skeys = [PETER_SKEY, gen["skey"]] + [s.private_key_text() for s in ours]
    signers = [Signer.from_private_key_text(k) for k in skeys]
    reqs = []
    for text in TEXTS:
        reqs.append({"op": "sign", "skeys": skeys, "text": b64(text)})
        reqs.append({"op": "sign", "skeys": skeys[:1], "text": b64(text)})
    resps = go.run(*reqs)
    for i, text in enumerate(TEXTS):
        both, one = resps[2 * i], resps[2 * i + 1]
        assert both["ok"] and one["ok"], (both, one)
        assert sign_note(text, signers) == unb64(both["msg"]), text[:60]
        assert sign_note(text, signers[:1]) == unb64(one["msg"]), text[:60]


def test_go_opens_python_notes_and_python_opens_go_notes(go):
    ours = python_signers()
    vkeys = [s.vkey for s in ours]
    reqs = [{"op": "open", "vkeys": vkeys, "msg": b64(sign_note(t, ours))} for t in TEXTS]
    reqs += [{"op": "open", "vkeys": vkeys[1:2], "msg": b64(sign_note(t, ours))} for t in TEXTS]
    reqs += [{"op": "sign", "skeys": [s.private_key_text() for s in ours], "text": b64(t)} for t in TEXTS]
    resps = go.run(*reqs)
    n = len(TEXTS)
    for i, text in enumerate(TEXTS):
        full, partial, signed = resps[i], resps[n + i], resps[2 * n + i]
        assert full["ok"] and unb64(full["text"]) == text, full
        assert [(s["name"], s["hash"]) for s in full["sigs"]] == [(s.name, s.verifier.key_id) for s in ours]
        assert partial["ok"] and [s["name"] for s in partial["sigs"]] == [ours[1].name], partial
        assert len(partial["unverified"]) == 2
        note = open_note(unb64(signed["msg"]), [parse_vkey(v) for v in vkeys])
        assert note.text == text
        assert [v.vkey for v in note.verified_by] == vkeys


def test_go_generated_keys_work_here(go):
    names = ["EnochRoot", "example.com/behind-the-sofa", "\u00fcn\u00efcode.example/\u65e5\u672c"]
    gens = go.run(*({"op": "generate", "name": n} for n in names))
    reqs = []
    for name, g in zip(names, gens):
        assert g["ok"], g
        signer = Signer.from_private_key_text(g["skey"])
        assert signer.name == name
        assert signer.vkey == g["vkey"]
        assert signer.private_key_text() == g["skey"]
        assert parse_vkey(g["vkey"]).vkey == g["vkey"]
        reqs.append({"op": "sign", "skeys": [g["skey"]], "text": b64(PETER_TEXT)})
        reqs.append({"op": "open", "vkeys": [g["vkey"]], "msg": b64(sign_note(PETER_TEXT, [signer]))})
    resps = go.run(*reqs)
    for (name, g), signed, opened in zip(zip(names, gens), resps[::2], resps[1::2]):
        note = open_note(unb64(signed["msg"]), [parse_vkey(g["vkey"])])
        assert note.text == PETER_TEXT and note.verified_by[0].name == name
        assert opened["ok"], opened


def test_go_accepts_our_keys(go):
    signers = python_signers() + [Signer.generate("example.com/generated") for _ in range(3)]
    reqs = []
    for s in signers:
        reqs.append({"op": "verifier", "vkey": s.vkey})
        reqs.append({"op": "signer", "skey": s.private_key_text()})
    resps = go.run(*reqs)
    for s, v, k in zip(signers, resps[::2], resps[1::2]):
        assert v["ok"] and k["ok"], (v, k)
        assert v["name"] == k["name"] == s.name
        assert v["hash"] == k["hash"] == s.verifier.key_id


def test_go_verifies_our_checkpoints(go):
    s = Signer.from_seed("example.com/log", bytes(range(32)))
    notes = [Checkpoint("example.com/log", n, leaf_hash(b"%d" % n) if n else EMPTY_ROOT).sign([s])
             for n in (0, 1, 255, 256, 123456789012)]
    resps = go.run(*({"op": "open", "vkeys": [s.vkey], "msg": b64(n)} for n in notes))
    for note, r in zip(notes, resps):
        assert r["ok"], r
        cp = parse_checkpoint_body(unb64(r["text"]))
        assert cp.body() == unb64(r["text"]) == note[: note.index(b"\n\n") + 1]


# -- key parsing differential ---------------------------------------------------

def _mangle(key: str) -> list[str]:
    """note_test.go TestNewVerifier/TestNewSigner: proper substrings and byte increments."""
    b = key.encode()
    out = {b[i:j] for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1) if (i, j) != (0, len(b))}
    out |= {b[:i] + bytes([b[i] + 1]) + b[i + 1:] for i in range(len(b))}
    return sorted(x.decode("utf-8", "replace") for x in out)


def _vkey_with(name: str, sig_type: int = SIG_ED25519, pub: bytes | None = None, hex_case: str = "lower") -> str:
    pub = pub if pub is not None else parse_vkey(PETER_VKEY).public_key
    kid = f"{key_id(name, sig_type, pub):08x}"
    if hex_case == "upper":
        kid = kid.upper()
    return f"{name}+{kid}+{b64(bytes([sig_type]) + pub)}"


# Vkeys on which note.NewVerifier and parse_vkey deliberately disagree (all of
# them we reject and Go accepts, except the stripped leading space). For the
# names: Python's str.isspace (behind \s in note._NAME_RE) calls U+001C..U+001F
# whitespace, Go's unicode.IsSpace does not; such a name can never appear in a
# valid signature line (control characters are forbidden in notes).
VKEY_DIVERGENCES = {
    _vkey_with("Peter\x1cNeumann"): "U+001C: Python isspace, not Go unicode.IsSpace; control char, unusable in notes",
    _vkey_with("Peter\x1fNeumann"): "U+001F: same as U+001C",
    _vkey_with("PeterNeumann", hex_case="upper"):
        "Go parses the key ID with strconv.ParseUint(16), so upper-case hex is accepted; "
        "we require the 8 lower-case hex digits every writer (Go's included) produces",
    _vkey_with("PeterNeumann", SIG_COSIGNATURE_V1):
        "type 0x04 (c2sp.org/tlog-cosignature) witness keys: Go's note package knows only 0x01",
    " " + PETER_VKEY: "we strip surrounding whitespace (keys come from files); Go reads ' PeterNeumann' as the name",
    PETER_VKEY[:30] + "\n" + PETER_VKEY[30:]: "Go's base64 decoder skips newlines inside the key; ours does not",
}


def test_vkey_parsing_agrees_with_go(go):
    corpus = _mangle(PETER_VKEY) + [PETER_VKEY, ENOCH_VKEY] + [s.vkey for s in python_signers()]
    for name in ["Peter\u00a0Neumann", "Peter\u2003Neumann", "Peter\u3000Neumann", "Peter\u0085Neumann",
                 "Peter\u2028Neumann", "Peter\u180eNeumann", "Peter\u200bNeumann", "Peter\ufeffNeumann",
                 "Peter\tNeumann", "Peter Neumann", "Peter\x1cNeumann", "Peter\x1fNeumann", "Peter\x01Neumann",
                 "Peter+Neumann", "", "\u00fcn\u00efcode"]:
        corpus.append(_vkey_with(name))
    corpus += [_vkey_with("PeterNeumann", hex_case="upper"), _vkey_with("PeterNeumann", SIG_COSIGNATURE_V1),
               _vkey_with("PeterNeumann", 0x02), _vkey_with("PeterNeumann", pub=bytes(31)),
               PETER_VKEY + "\n", " " + PETER_VKEY, PETER_VKEY[:30] + "\n" + PETER_VKEY[30:],
               PETER_VKEY + "=", PETER_VKEY + "==", PETER_VKEY.replace("+", "+0", 1),
               PETER_VKEY.rstrip("W") + "X"]
    resps = go.run(*({"op": "verifier", "vkey": k} for k in corpus))
    disagree = {}
    for vkey, r in zip(corpus, resps):
        try:
            v = parse_vkey(vkey)
            ours = True
        except InputError:
            ours = False
        if ours != r["ok"]:
            disagree[vkey] = (ours, r.get("err"))
        elif ours:
            assert (v.name, v.key_id) == (r["name"], r["hash"]), vkey
    assert set(disagree) == set(VKEY_DIVERGENCES), {k: v for k, v in disagree.items() if k not in VKEY_DIVERGENCES}


SKEY_DIVERGENCES = {
    PETER_SKEY.replace("c74f20a3", "C74F20A3"): "upper-case key ID, as for vkeys",
}


def test_private_key_parsing_agrees_with_go(go):
    corpus = _mangle(PETER_SKEY) + [PETER_SKEY] + [s.private_key_text() for s in python_signers()]
    corpus += list(SKEY_DIVERGENCES) + [PETER_SKEY.replace("PRIVATE+KEY", "private+key"),
                                        PETER_SKEY.replace("AYEK", "AoEK"), PETER_SKEY + "\n",
                                        PETER_SKEY + "=", PETER_SKEY + "=="]
    resps = go.run(*({"op": "signer", "skey": k} for k in corpus))
    disagree = {}
    for skey, r in zip(corpus, resps):
        try:
            s = Signer.from_private_key_text(skey)
            ours = True
        except InputError:
            ours = False
        if ours != r["ok"]:
            disagree[skey] = (ours, r.get("err"))
        elif ours:
            assert (s.name, s.verifier.key_id) == (r["name"], r["hash"]), skey
    assert set(disagree) == set(SKEY_DIVERGENCES), {k: v for k, v in disagree.items() if k not in SKEY_DIVERGENCES}


# -- note.Open differential ------------------------------------------------------

def _sig_line(name: str, raw: bytes) -> bytes:
    return "\u2014 ".encode() + name.encode() + b" " + b64(raw).encode() + b"\n"


def _open_corpus() -> dict[str, tuple[bytes, list[str]]]:
    """id -> (message, trusted vkeys)."""
    peter = [PETER_VKEY]
    raw = unb64(PETER_SIG.split(b" ")[2].decode())
    bad_peter = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    t = PETER_TEXT
    c: dict[str, tuple[bytes, list[str]]] = {
        # note_test.go TestOpen
        "peter": (t + b"\n" + PETER_SIG, peter),
        "peter+enoch/peter": (t + b"\n" + PETER_SIG + ENOCH_SIG, peter),
        "peter+enoch/both": (t + b"\n" + PETER_SIG + ENOCH_SIG, [PETER_VKEY, ENOCH_VKEY]),
        "peter+enoch/none": (t + b"\n" + PETER_SIG + ENOCH_SIG, []),
        "enoch/peter": (t + b"\n" + ENOCH_SIG, peter),
        "101 sigs": (t + b"\n" + PETER_SIG * 101, peter),
        "101 sigs/none": (t + b"\n" + PETER_SIG * 101, []),
        "100 sigs": (t + b"\n" + PETER_SIG * 100, peter),
        "invalid sig": (t + b"\n" + bad_peter, peter),
        "dups": (t + b"\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG
                 + ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:], peter),
        "only text": (t, peter),
        "text+blank": (t + b"\n", peter),
        "no final newline": (t + b"\n" + PETER_SIG[:-1], peter),
        "\\x01": (b"\x01" + t + b"\n" + PETER_SIG, peter),
        "\\xff": (b"\xff" + t + b"\n" + PETER_SIG, peter),
        "bad name": (t + b"\n" + "\u2014 Bad Name ".encode() + PETER_SIG.split(b" ")[2], peter),
        "unexpected line": (t + b"\n" + PETER_SIG + b"Unexpected line.\n", peter),
        # more syntax
        "good then bad, same key": (t + b"\n" + PETER_SIG + bad_peter, peter),
        "bad then good, same key": (t + b"\n" + bad_peter + PETER_SIG, peter),
        "blank line after sigs": (t + b"\n" + PETER_SIG + b"\n", peter),
        "no blank line": (t + PETER_SIG, peter),
        "CR": (t.replace(b"\n", b"\r\n", 1) + b"\n" + PETER_SIG, peter),
        "tab": (b"\t" + t + b"\n" + PETER_SIG, peter),
        "surrogate": (b"\xed\xa0\x80\n" + b"\n" + PETER_SIG, peter),
        "overlong": (b"\xc0\xaf\n" + b"\n" + PETER_SIG, peter),
        "lone continuation": (b"\x80\n" + b"\n" + PETER_SIG, peter),
        "en dash": (t + b"\n" + PETER_SIG.replace("\u2014".encode(), "\u2013".encode()), peter),
        "hyphen": (t + b"\n" + PETER_SIG.replace("\u2014".encode(), b"-"), peter),
        "no space after dash": (t + b"\n" + PETER_SIG.replace("\u2014 ".encode(), "\u2014".encode()), peter),
        "two spaces": (t + b"\n" + PETER_SIG.replace(b"Neumann ", b"Neumann  "), peter),
        "trailing space": (t + b"\n" + PETER_SIG[:-1] + b" \n", peter),
        "unpadded base64": (t + b"\n" + PETER_SIG.replace(b"=\n", b"\n"), peter),
        "extra padding": (t + b"\n" + PETER_SIG.replace(b"=\n", b"==\n"), peter),
        "5-byte unknown sig": (t + b"\n" + _sig_line("Other", b"\x00\x00\x00\x01\x02") + PETER_SIG, peter),
        "4-byte sig": (t + b"\n" + _sig_line("Other", b"\x00\x00\x00\x01") + PETER_SIG, peter),
        "6-byte unknown sig": (t + b"\n" + _sig_line("Other", b"\x00\x00\x00\x01\x02\x03") + PETER_SIG, peter),
        "excess padding, unknown sig": (t + b"\n" + _sig_line("Other", b"\x00\x00\x00\x01\x02\x03")[:-1] + b"=\n"
                                        + PETER_SIG, peter),
        "empty name": (t + b"\n" + _sig_line("", raw) + PETER_SIG, peter),
        "plus in name": (t + b"\n" + _sig_line("a+b", raw) + PETER_SIG, peter),
        "short known sig": (t + b"\n" + _sig_line("PeterNeumann", raw[:40]), peter),
        "long known sig": (t + b"\n" + _sig_line("PeterNeumann", raw + b"\x00"), peter),
        "same name other id": (t + b"\n" + _sig_line("PeterNeumann", b"\x00\x00\x00\x01" + raw[4:]) + PETER_SIG, peter),
        "same id other name": (t + b"\n" + _sig_line("PeterNeumannX", raw) + PETER_SIG, peter),
        "empty text": (b"\n\n" + _sig_line("PeterNeumann", raw), peter),
        "over 64 KiB": (b"x" * 65536 + b"\n\n" + PETER_SIG, peter),
    }
    # Unicode spaces (and look-alikes) in the name of an unknown signature.
    for cp in (0x00A0, 0x0085, 0x1680, 0x2000, 0x2003, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
               0x180E, 0x200B, 0xFEFF, 0x2060):
        c[f"U+{cp:04X} in name"] = (t + b"\n" + _sig_line(f"Un{chr(cp)}known", raw) + PETER_SIG, peter)
    # Non-canonical base64: same bytes, different trailing bits.
    b64sig = PETER_SIG.split(b" ")[2].rstrip(b"\n")
    last = b64sig[-2:-1]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    tweaked = b64sig[:-2] + alphabet[alphabet.index(last) ^ 1: alphabet.index(last) ^ 1 + 1] + b"="
    c["non-canonical base64"] = (t + b"\n" + b"\xe2\x80\x94 PeterNeumann " + tweaked + b"\n", peter)
    # Our own notes with a witness key we do not trust.
    ours = python_signers()
    c["ours"] = (sign_note(b"hello\n", ours), [ours[0].vkey])
    c["ours/untrusted"] = (sign_note(b"hello\n", ours[1:]), [ours[0].vkey])
    return c


# Where note.Open and open_note disagree, and why that is intended.
OPEN_DIVERGENCES = {
    "good then bad, same key": "Go skips repeated signatures by a key it already verified; we verify every "
                               "signature by a trusted key and reject the note if any fails (the spec's "
                               "SHOULD reject, taken as MUST; docs/PROTOCOL.md section 3)",
    "over 64 KiB": "we cap notes at 64 KiB (docs/PROTOCOL.md section 3); Go has no size limit",
    "non-canonical base64": "we accept only canonical base64 (no excess padding, zero padding bits), so a "
                            "signature has exactly one encoding (federation/b64.py); Go's StdEncoding "
                            "ignores non-zero padding bits",
}


def _python_open(msg: bytes, vkeys: list[str]):
    try:
        note = open_note(msg, [parse_vkey(v) for v in vkeys])
    except MalformedError:
        return ("malformed",)
    except SignatureError:
        return ("signature",)
    return ("ok", note.text, sorted(v.name for v in note.verified_by))


def _go_open(r: dict):
    if r["ok"]:
        return ("ok", unb64(r["text"]), sorted({s["name"] for s in r["sigs"]}))
    return {"malformed": ("malformed",), "unverified": ("signature",),
            "invalid_signature": ("signature",)}.get(r["kind"], ("other", r["err"]))


def test_note_open_agrees_with_go(go):
    corpus = _open_corpus()
    resps = go.run(*({"op": "open", "vkeys": vk, "msg": b64(msg)} for msg, vk in corpus.values()))
    disagree = {}
    for (cid, (msg, vkeys)), r in zip(corpus.items(), resps):
        ours, theirs = _python_open(msg, vkeys), _go_open(r)
        if ours != theirs:
            disagree[cid] = (ours[:1], theirs[:1], r.get("err"))
    unexpected = {k: v for k, v in disagree.items() if k not in OPEN_DIVERGENCES}
    assert not unexpected, unexpected
    assert set(disagree) == set(OPEN_DIVERGENCES)
    # The sanity of the corpus itself: Go accepted what it should have.
    assert _go_open(resps[list(corpus).index("peter+enoch/both")])[2] == ["EnochRoot", "PeterNeumann"]


# ---- Merkle trees ------------------------------------------------------------------

def go_leaves(n: int) -> list[bytes]:
    """The leaves Go's conformance tool generates for {"gen": n} (as tlog_test.go)."""
    return [b"leaf %d" % i for i in range(n)]


def roots_for_all_sizes(hashes: list[bytes]) -> list[bytes]:
    cr, out = CompactRange(), [EMPTY_ROOT]
    for h in hashes:
        cr.append(h)
        out.append(cr.root())
    return out


def test_tree_hashes_agree_with_go(go):
    n = 1100
    resp = go.one({"op": "tree", "gen": n, "sizes": list(range(n + 1))})
    assert resp["ok"], resp
    hashes = [leaf_hash(x) for x in go_leaves(n)]
    assert [unb64(h) for h in resp["record_hashes"]] == hashes
    go_roots = [unb64(h) for h in resp["roots"]]
    ours = roots_for_all_sizes(hashes)
    # tlog.TreeHash defines the empty tree as all zeros; RFC 6962 (and we) use SHA-256("").
    assert go_roots[0] == bytes(32) and ours[0] == EMPTY_ROOT
    mismatched = [s for s in range(1, n + 1) if go_roots[s] != ours[s]]
    assert mismatched == []


def test_tree_hashes_of_binary_leaves_agree_with_go(go):
    rng = random.Random(6962)
    leaves = [rng.randbytes(rng.choice([0, 1, 2, 31, 32, 33, 100, 4096])) for _ in range(300)]
    resp = go.one({"op": "tree", "leaves": [b64(x) for x in leaves], "sizes": list(range(1, 301))})
    assert resp["ok"], resp
    hashes = [leaf_hash(x) for x in leaves]
    assert [unb64(h) for h in resp["record_hashes"]] == hashes
    assert [unb64(h) for h in resp["roots"]] == roots_for_all_sizes(hashes)[1:]


def _tiles_of(hashes: list[bytes]) -> dict[tuple[int, int], list[bytes]]:
    tb = TileBuilder(0, {})
    tiles = tb.add_leaves(hashes)
    tiles.update(tb.partials())
    return {(lvl, idx): parse_hash_tile(data, w) for (lvl, idx, w), data in tiles.items()}


def test_proofs_agree_with_go_exhaustively_for_small_trees(go):
    n = 64
    hashes = [leaf_hash(x) for x in go_leaves(n)]
    roots = roots_for_all_sizes(hashes)
    mth = lambda s, e: roots_for_all_sizes(hashes[s:e])[-1]  # noqa: E731
    records = [(size, i) for size in range(1, n + 1) for i in range(size)]
    trees = [(size, old) for size in range(1, n + 1) for old in range(1, size + 1)]
    resp = go.one({"op": "tree", "gen": n,
                   "records": [{"size": s, "index": i} for s, i in records],
                   "trees": [{"size": s, "old": o} for s, o in trees]})
    assert resp["ok"], resp
    ours_r = {}
    for (size, i), r in zip(records, resp["records"]):
        assert r["err"] == "", r
        got = [unb64(h) for h in r["proof"] or []]
        ours = ours_r[(size, i)] = inclusion_proof(i, size, mth)
        assert got == ours, (size, i)
        assert verify_inclusion(hashes[i], i, size, got, roots[size])
    ours_t = {}
    for (size, old), r in zip(trees, resp["trees"]):
        assert r["err"] == "", r
        got = [unb64(h) for h in r["proof"] or []]
        ours = ours_t[(size, old)] = consistency_proof(old, size, mth)
        assert got == ours, (old, size)
        assert verify_consistency(old, size, roots[old], roots[size], got)
    # And Go's checkers accept our proofs (and reject corrupted ones), per tree size.
    reqs, expect = [], []
    for size in range(1, n + 1):
        recs = [{"index": i, "leaf": b64(hashes[i]), "proof": [b64(p) for p in ours_r[(size, i)]]} for i in range(size)]
        trs = [{"old": o, "old_root": b64(roots[o]), "proof": [b64(p) for p in ours_t[(size, o)]]}
               for o in range(1, size + 1)]
        reqs.append({"op": "check", "size": size, "root": b64(roots[size]), "records": recs, "trees": trs})
        expect.append(("", len(recs), len(trs)))
        bad_recs = [dict(r, leaf=b64(leaf_hash(b"x"))) for r in recs]
        bad_trs = [dict(t, old_root=b64(leaf_hash(b"x"))) for t in trs]
        reqs.append({"op": "check", "size": size, "root": b64(roots[size]), "records": bad_recs, "trees": bad_trs})
        expect.append(("fail", len(recs), len(trs)))
    for (mode, nr, nt), r in zip(expect, go.run(*reqs)):
        if mode == "":
            assert r["records"] == [""] * nr and r["trees"] == [""] * nt, r
        else:
            assert all(e for e in r["records"]) and all(e for e in r["trees"]), r


def test_proofs_from_tiles_agree_with_go_for_a_large_tree(go):
    n = 70000
    hashes = [leaf_hash(x) for x in go_leaves(n)]
    tiles = _tiles_of(hashes)
    roots = {}
    cr = CompactRange()
    checkpoints = {1, 255, 256, 257, 65535, 65536, 65537, 69999, 70000}
    rng = random.Random(1)
    checkpoints |= {rng.randint(1, n) for _ in range(20)}
    for i, h in enumerate(hashes, 1):
        cr.append(h)
        if i in checkpoints:
            roots[i] = cr.root()
    sizes = sorted(checkpoints)
    records = [(size, i) for size in sizes for i in {0, size - 1, size // 2, rng.randrange(size)}]
    trees = [(size, old) for size in sizes for old in sizes if old <= size]
    resp = go.one({"op": "tree", "gen": n, "sizes": sizes,
                   "records": [{"size": s, "index": i} for s, i in records],
                   "trees": [{"size": s, "old": o} for s, o in trees]})
    assert resp["ok"], resp
    assert [unb64(h) for h in resp["roots"]] == [roots[s] for s in sizes]
    for (size, i), r in zip(records, resp["records"]):
        ours = inclusion_proof(i, size, TileHashes(size, tiles).mth)
        assert [unb64(h) for h in r["proof"] or []] == ours, (size, i)
        assert verify_inclusion(hashes[i], i, size, ours, roots[size])
    for (size, old), r in zip(trees, resp["trees"]):
        ours = consistency_proof(old, size, TileHashes(size, tiles).mth)
        assert [unb64(h) for h in r["proof"] or []] == ours, (old, size)
        assert verify_consistency(old, size, roots[old], roots[size], ours)


def test_tiles_agree_with_go(go):
    sizes = [1, 2, 255, 256, 257, 511, 512, 513, 65535, 65536, 65537, 70000]
    hashes = [leaf_hash(x) for x in go_leaves(max(sizes))]
    ours: dict[int, dict[tuple[int, int, int], bytes]] = {}
    tb, full, done = TileBuilder(0, {}), {}, 0
    for size in sizes:
        full.update(tb.add_leaves(hashes[done:size]))
        done = size
        exposed = set(tiles_for_size(size))
        ours[size] = {k: v for k, v in {**full, **tb.partials()}.items() if k in exposed}
        assert set(ours[size]) == exposed, size
    resps = go.run(*({"op": "tree", "gen": size, "size": size, "tiles": [list(t) for t in tiles_for_size(size)]}
                     for size in sizes))
    for size, r in zip(sizes, resps):
        assert r["ok"], r
        # Go's NewTiles(8, 0, size), widest version of each tile == tlog-tiles' exposed set.
        assert [(t["level"], t["index"], t["width"]) for t in r["exposed"]] == tiles_for_size(size), size
        assert [t["path"] for t in r["exposed"]] == [tile_path(*t) for t in tiles_for_size(size)], size
        for t in r["tiles"]:
            key = (t["level"], t["index"], t["width"])
            assert t["err"] == "", t
            assert t["path"] == tile_path(*key)
            assert t["len"] == len(ours[size][key])
            assert t["sha256"] == hashlib.sha256(ours[size][key]).hexdigest(), (size, key)


# ---- Go audits a feed published by federation.publisher ----------------------------

ORIGIN = "conformance.example/feeds/go"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A feed with versions crossing 256 and 65536 entries: (db path, signer, [checkpoint notes])."""
    path = tmp_path_factory.mktemp("go-feed") / "pub.db"
    signer = Signer.from_seed(ORIGIN, bytes(range(32)))
    pub = Publisher(path)
    pub.create_feed("go", ORIGIN, signer)
    add = lambda i, case="case-1", labels=("a",): E.Add("md5", i.to_bytes(16, "big"), case, labels, 0)  # noqa: E731
    versions = [
        [add(i) for i in range(5)],
        [add(i, f"case-{i % 3}") for i in range(5, 305)],
        [E.Withdraw("other", 0, "md5", (7).to_bytes(16, "big")),
         E.Withdraw("duplicate", 0, "md5", (8).to_bytes(16, "big"), "case-2"),
         E.Withdraw("legal", 0, case="case-0"),
         add(1, labels=("a", "b"))],
        [add(i, "case-9") for i in range(1000, 4000)],
        [add(i, "case-10") for i in range(10000, 72500)],
    ]
    notes = [pub.feed("go").checkpoint]
    for k, ops in enumerate(versions):
        pub.publish("go", ops, signer, now=1700000000 + k)
        notes.append(pub.feed("go").checkpoint)
    pub.close()
    return path, signer, notes


def _db_tiles(path: Path) -> dict[tuple[int, int, int], bytes]:
    pub = Publisher(path)
    try:
        return {(lvl, idx, w): bytes(data) for lvl, idx, w, data in
                pub.conn.execute("SELECT level, idx, width, data FROM tiles")}
    finally:
        pub.close()


def test_go_audits_a_published_feed(go, published, tmp_path):
    path, signer, notes = published
    cps = [parse_checkpoint_body(n[: n.index(b"\n\n") + 1]) for n in notes]
    final = cps[-1]
    assert final.size > 65536
    stored = _db_tiles(path)
    for (lvl, idx, w), data in stored.items():
        f = tmp_path / tile_path(lvl, idx, w)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    tiles = {(lvl, idx): parse_hash_tile(data, w) for (lvl, idx, w), data in stored.items()
             if lvl >= 0 and w == max(ww for (l2, i2, ww) in stored if (l2, i2) == (lvl, idx))}
    entries = []
    for idx in range((final.size + 255) // 256):
        w = min(256, final.size - 256 * idx)
        entries += parse_bundle(stored[(ENTRIES, idx, w)], w)
    assert len(entries) == final.size

    th = TileHashes(final.size, tiles)
    indexes = sorted({0, 1, 5, 255, 256, 305, 306, 311, 4000, 65535, 65536, final.size - 1}
                     | {cp.size - 1 for cp in cps if cp.size})
    olds = [cp.size for cp in cps if cp.size] + [257, 65537]
    records = [{"index": i, "leaf": b64(leaf_hash(entries[i])),
                "proof": [b64(p) for p in inclusion_proof(i, final.size, th.mth)]} for i in indexes]
    trees = [{"old": cp.size, "old_root": b64(cp.root),
              "proof": [b64(p) for p in consistency_proof(cp.size, final.size, th.mth)]} for cp in cps if cp.size]
    r = go.one({"op": "audit", "vkey": signer.vkey, "msg": b64(notes[-1]), "dir": str(tmp_path),
                "indexes": indexes, "olds": olds, "records": records, "trees": trees})
    assert r["ok"], r
    assert (r["origin"], r["size"], unb64(r["root"])) == (ORIGIN, final.size, final.root)
    assert unb64(r["tree_hash"]) == final.root
    # Every leaf hash Go authenticated through the tiles is the hash of the entry we serve.
    assert [unb64(h) for h in r["leaf_hashes"]] == [leaf_hash(entries[i]) for i in indexes]
    # Go's proofs over our tiles are byte for byte ours.
    for i, rp in zip(indexes, r["record_proofs"]):
        assert rp["err"] == ""
        assert [unb64(h) for h in rp["proof"] or []] == inclusion_proof(i, final.size, th.mth), i
    by_size = {cp.size: cp.root for cp in cps}
    for old, ro in zip(olds, r["olds"]):
        assert ro["err"] == "" and ro["proof_err"] == "", ro
        assert [unb64(h) for h in ro["proof"] or []] == consistency_proof(old, final.size, th.mth), old
        if old in by_size:  # every earlier signed root is the root Go computes from today's tiles
            assert unb64(ro["root"]) == by_size[old], old
    assert r["checked_records"] == [""] * len(records)
    assert r["checked_trees"] == [""] * len(trees)
    # Go's tile paths are ours: it found every tile it asked for under tile_path().
    assert r["tiles_read"] and set(r["tiles_read"]) <= {tile_path(*k) for k in stored}

    # Every checkpoint we ever signed opens in Go.
    for note, cp, resp in zip(notes, cps, go.run(*({"op": "open", "vkeys": [signer.vkey], "msg": b64(n)} for n in notes))):
        assert resp["ok"] and parse_checkpoint_body(unb64(resp["text"])) == cp, resp

    # The audit is live: corrupt the partial level-0 tile of the signed size and
    # Go refuses it. (A corrupt *full* tile below a partial one is not always
    # caught by this x/mod version: tileHashReader starts authenticating tiles
    # against their parents at index len(stx), the number of tree-hash
    # subtrees, not the number of distinct tiles they came from, so it can skip
    # the first tiles fetched for an index. Our checks above do not rely on it:
    # every hash Go returned is compared with our own.)
    assert final.size % 256
    victim = tmp_path / tile_path(0, final.size // 256, final.size % 256)
    data = bytearray(victim.read_bytes())
    data[40] ^= 1
    victim.write_bytes(bytes(data))
    bad = go.one({"op": "audit", "vkey": signer.vkey, "msg": b64(notes[-1]), "dir": str(tmp_path),
                  "indexes": [300], "olds": [], "records": [], "trees": []})
    assert not bad["ok"] and "inconsistent tile" in bad["err"], bad
    # ... and a checkpoint signed by another key.
    other = Signer.from_seed(ORIGIN, bytes(32))
    forged = Checkpoint(ORIGIN, final.size, final.root).sign([other])
    bad = go.one({"op": "audit", "vkey": signer.vkey, "msg": b64(forged), "dir": str(tmp_path)})
    assert not bad["ok"] and "open:" in bad["err"], bad


# ---- the vectors of docs/PROTOCOL.md's appendix, checked by Go ------------------------------

VECTORS = TESTS_DIR / "vectors"


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads((VECTORS / "vectors.json").read_text())


@pytest.fixture(scope="module")
def golden_entries(tmp_path_factory, vectors) -> list[bytes]:
    """Every entry of the golden feed, rebuilt by the generator (vectors.json holds only a few)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    mv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mv)
    work = tmp_path_factory.mktemp("golden")
    files = mv.build(work)
    assert json.loads(files["vectors.json"]) == vectors  # the same feed as the stored vectors
    tiles = _db_tiles(work / "golden.db")
    size = vectors["feed"]["versions"][-1]["size"]
    out: list[bytes] = []
    for idx in range((size + 255) // 256):
        w = min(256, size - 256 * idx)
        out += parse_bundle(tiles[(ENTRIES, idx, w)], w)
    return out


def _twin_vkey(vkey: str) -> str:
    """The type 0x04 vkey of an Ed25519 log key: its timestamp key (PROTOCOL.md section 3a)."""
    v = parse_vkey(vkey).timestamp_key()
    return f"{v.name}+{v.key_id:08x}+{b64(bytes([SIG_COSIGNATURE_V1]) + v.public_key)}"


def test_go_reads_the_appendix_keys(go, vectors):
    k, w, t = vectors["key"], vectors["witness"], vectors["trust_key"]
    log_v, log_s, trust_v, witness_v = go.run(
        {"op": "verifier", "vkey": k["vkey"]}, {"op": "signer", "skey": k["private_key"]},
        {"op": "verifier", "vkey": t["vkey"]}, {"op": "verifier", "vkey": w["vkey"]})
    assert (log_v["name"], log_v["hash"]) == (log_s["name"], log_s["hash"]) == (k["name"], int(k["key_id"], 16))
    assert (trust_v["name"], trust_v["hash"]) == (t["name"], int(t["key_id"], 16))
    # sumdb/note knows type 0x01 only; the 0x04 keys are checked by the "cosig" op below.
    assert not witness_v["ok"] and "unknown" in witness_v["err"]


def test_go_opens_the_appendix_notes_and_checks_their_cosignatures(go, vectors):
    k, w, c = vectors["key"], vectors["witness"], vectors["cosigned"]
    twin = _twin_vkey(k["vkey"])
    assert twin.split("+")[1] == k["timestamp_key_id"]
    rows = vectors["feed"]["versions"]
    reqs = [{"op": "cosig", "vkeys": [k["vkey"]], "cosigners": [twin, w["vkey"]], "msg": b64(r["checkpoint"].encode())}
            for r in rows]
    reqs.append({"op": "cosig", "vkeys": [k["vkey"]], "cosigners": [twin, w["vkey"]], "msg": b64(c["note"].encode())})
    reqs.append({"op": "open", "vkeys": [vectors["trust_key"]["vkey"]], "msg": b64(vectors["trust_file"].encode())})
    reqs.append({"op": "open", "vkeys": [k["vkey"]], "msg": b64(vectors["note"]["signed"].encode())})
    reqs += [{"op": "open", "vkeys": [k["vkey"]], "msg": b64(r["checkpoint"].encode())} for r in rows]
    resps = go.run(*reqs)
    n = len(rows)
    for r, resp in zip(rows, resps[:n]):
        assert resp["ok"], resp
        assert unb64(resp["text"]) == r["checkpoint"].encode().split(b"\n\n")[0] + b"\n"
        # One timestamp line by the log key's 0x04 twin, valid, at the version's time.
        assert [(x["name"], x["hash"], x["time"], x["ok"]) for x in resp["lines"]] == \
            [(k["name"], int(k["timestamp_key_id"], 16), r.get("time", 1700000000), True)]
    cos = resps[n]
    assert cos["ok"] and unb64(cos["text"]) == c["message"].encode().split(b"\n", 2)[2]
    assert sorted((x["name"], x["time"], x["ok"]) for x in cos["lines"]) == \
        sorted([(k["name"], rows[1]["time"], True), (w["name"], c["time"], True)])
    trust, note = resps[n + 1], resps[n + 2]
    assert trust["ok"] and unb64(trust["text"]) == parse_note(vectors["trust_file"].encode()).text
    assert [s["name"] for s in trust["sigs"]] == [vectors["trust_key"]["name"]]
    assert note["ok"] and unb64(note["text"]) == vectors["note"]["text"].encode()
    for r, opened in zip(rows, resps[n + 3:]):
        # The log's own verifier ignores the timestamp line: an unknown key to sumdb/note.
        assert opened["ok"] and [s["hash"] for s in opened["sigs"]] == [int(k["key_id"], 16)]
        assert [s["hash"] for s in opened["unverified"]] == [int(k["timestamp_key_id"], 16)]


def test_go_computes_the_appendix_tree(go, vectors, golden_entries):
    feed, m = vectors["feed"], vectors["merkle"]
    size = feed["versions"][-1]["size"]
    entries = golden_entries
    assert len(entries) == size
    assert [e.hex() for e in entries[:16]] == feed["entries_first_16"]
    assert [e.hex() for e in entries[-4:]] == feed["entries_last_4"]
    roots = {int(s): bytes.fromhex(r) for s, r in m["roots"].items()}
    hash_tiles = [tuple(parse_tile_path(p)) for p in feed["tile_sha256"] if not p.startswith("tile/entries/")]
    tree = go.one({"op": "tree", "leaves": [b64(e) for e in entries], "sizes": sorted(roots),
                   "tiles": [list(t) for t in hash_tiles],
                   "records": [{"size": p["size"], "index": p["index"]} for p in m["inclusion"]],
                   "trees": [{"size": size, "old": p["old"]} for p in m["consistency"]]})
    assert tree["ok"], tree
    # Roots of every signed size (sumdb/tlog's empty tree is all zeros, RFC 6962's SHA-256(""): section 3b).
    go_roots = dict(zip(sorted(roots), (unb64(x) for x in tree["roots"])))
    assert go_roots[0] == bytes(32) and roots[0] == EMPTY_ROOT
    assert {s: r for s, r in go_roots.items() if s} == {s: r for s, r in roots.items() if s}
    # Leaf hashes (tlog.RecordHash) and every stored hash tile, byte for byte.
    assert [unb64(x).hex() for x in tree["record_hashes"][:4]] == m["leaf_hashes_first_4"]
    for t in tree["tiles"]:
        assert t["err"] == "" and t["sha256"] == feed["tile_sha256"][t["path"]], t
    for path, data in feed["tiles_hex"].items():
        if not path.startswith("tile/entries/"):
            assert hashlib.sha256(bytes.fromhex(data)).hexdigest() == feed["tile_sha256"][path]
    # Proofs: Go's, from its own storage, are the appendix's.
    for p, r in zip(m["inclusion"], tree["records"]):
        assert r["err"] == "" and [unb64(x).hex() for x in r["proof"] or []] == p["proof"], p["index"]
        assert unb64(tree["record_hashes"][p["index"]]).hex() == p["leaf_hash"]
    for p, r in zip(m["consistency"], tree["trees"]):
        assert r["err"] == "" and [unb64(x).hex() for x in r["proof"] or []] == p["proof"], p["old"]
    # The entry vectors' leaf hashes.
    samples = list(vectors["entries"].values())
    leaves = go.one({"op": "tree", "leaves": [b64(bytes.fromhex(e["encoded"])) for e in samples]})
    assert [unb64(x).hex() for x in leaves["record_hashes"]] == [e["leaf_hash"] for e in samples]


# Tile paths on which tlog.ParseTilePath and layout.parse_tile_path deliberately disagree.
TILE_PATH_DIVERGENCES = {
    "tile/64/000": "levels above 63 cannot hold a node of a tree of at most 2^63 - 1 leaves (section 2); "
                   "sumdb accepts any level",
    "tile/0/x072/x057/x594/x037/x927/936": "index 2^56: no tree of at most 2^63 - 1 leaves has it (section 2)",
    "tile/0/x009/x223/x372/x036/x854/x775/807": "seven x-groups (index 2^63 - 1): over the six a tile index "
                                                "below 2^56 needs",
}


def test_tile_paths_agree_with_go(go):
    good = [(0, 0, 256), (0, 1, 256), (0, 999, 256), (0, 1000, 256), (0, 1234067, 256), (1, 0, 1), (0, 1, 35),
            (-1, 0, 14), (-1, 1000, 255), (63, 0, 1), (0, (1 << 56) - 1, 256), (2, 5, 200)]
    corpus = [tile_path(*t) for t in good]
    corpus += ["tile/0/0", "tile/0/00", "tile/0/0000", "tile/0/x000/001", "tile/0/x1/000", "tile/0/x001/0",
               "tile/0/001.p/0", "tile/0/001.p/256", "tile/0/001.p/05", "tile/0/001.p/", "tile/0/001.p",
               "tile/00/000", "tile/01/000", "tile/-1/000", "tile/data/000", "tile/entries/x000/000",
               "tile/0/000/", "tile/0/x001", "tile/0/x001/x002", "tile/0/+01", "tile/0/ 01", "tile/0/-01",
               "tile/0/x-01/000", "tile/8/0/000", "tile/entries/000.p/256", "tile/0/000.p/1.p/2"]
    corpus += list(TILE_PATH_DIVERGENCES)
    resp = go.one({"op": "tilepaths", "paths": corpus})
    disagree = {}
    for path, r in zip(corpus, resp["paths"]):
        try:
            ours = parse_tile_path(path)
        except MalformedError:
            ours = None
        theirs = None if r["err"] else (r["level"], r["index"], r["width"])
        if ours != theirs:
            disagree[path] = (ours, theirs)
    assert set(disagree) == set(TILE_PATH_DIVERGENCES), {p: d for p, d in disagree.items()
                                                         if p not in TILE_PATH_DIVERGENCES}
    for t in good:
        assert parse_tile_path(tile_path(*t)) == t
