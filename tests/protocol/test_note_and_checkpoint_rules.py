"""docs/PROTOCOL.md sections 3 and 3a, rule by rule: keys, note text, checkpoint lines,
and the empty tree. Each test names the rule and the error kind the document gives it.
Pure: keys are generated from fixed seeds here."""
from __future__ import annotations

import base64

import pytest

from federation.core import verify as V
from federation.core.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint_body
from federation.core.errors import ForkError, InputError, MalformedError, NothingNew, SignatureError
from federation.core.freshness import check_origin
from federation.core.merkle import CompactRange, EMPTY_ROOT, verify_consistency
from federation.core.note import (NAME_FORBIDDEN, Signer, _NAME_RE, check_key_name, open_note, parse_note, parse_vkey,
                                  sign_note)

ORIGIN = "example.org/feeds/t"
ROOT_B64 = base64.b64encode(bytes(32)).decode()


def signer_whose_key_has_a_plus(name: str) -> Signer:
    """A key whose base64 (in the vkey and in the private key) holds a '+'."""
    for i in range(1000):
        s = Signer.from_seed(name, i.to_bytes(32, "big"))
        if "+" in s.vkey.split("+", 2)[2] and "+" in s.private_key_text().split("+", 4)[4]:
            return s
    raise AssertionError("no seed below 1000 gives a '+' in both")


# ---- vkeys and private keys: split at the first two (four) '+' --------------------------

def test_vkey_splits_at_its_first_two_plus_signs():
    s = signer_whose_key_has_a_plus(ORIGIN)
    vkey = s.vkey
    assert vkey.count("+") > 2
    v = parse_vkey(vkey)
    assert (v.name, v.key_id, v.public_key) == (ORIGIN, s.verifier.key_id, s.verifier.public_key)
    # What the two obvious misreadings do with the same string:
    assert len(vkey.split("+")) != 3                       # split at every '+': not three fields
    assert vkey.rsplit("+", 2)[0] != ORIGIN                # split at the last two: a wrong name
    assert Signer.from_private_key_text(s.private_key_text()).vkey == vkey


def test_key_names_forbid_plus_and_exactly_these_spaces():
    # The explicit list is Python's str.isspace() set plus '+', nothing more or less.
    assert set(NAME_FORBIDDEN) == {chr(c) for c in range(0x110000) if chr(c).isspace()} | {"+"}
    for c in NAME_FORBIDDEN:
        with pytest.raises(InputError):
            check_key_name(f"a{c}b")
    for ok in ["a\x01b", "a\x7fb", "a\u0080b", "\u00fcn\u00efcode", "a\u200bb", "a\u180eb"]:
        assert _NAME_RE.fullmatch(ok), repr(ok)  # C0/DEL/C1 are not spaces (they cannot be in a note, though)
    with pytest.raises(InputError):
        check_key_name("")


# ---- note text: C0 controls except newline are refused; DEL and C1 are not ------------------

@pytest.mark.parametrize("c", [chr(x) for x in range(0x20) if x != 0x0a])
def test_note_text_refuses_every_c0_control_but_newline(c):
    s = Signer.from_seed(ORIGIN, bytes(32))
    good = sign_note(b"hello\n", [s])
    bad = good.replace(b"hello", b"hel" + c.encode() + b"lo")
    with pytest.raises(MalformedError, match=f"U\\+{ord(c):04X}") as info:
        open_note(bad, [s.verifier])
    assert info.value.kind == "malformed"
    with pytest.raises(MalformedError):
        sign_note(b"hel" + c.encode() + b"lo\n", [s])


@pytest.mark.parametrize("c", ["\x7f", "\x80", "\x85", "\x9f", "\u2028", "\ufeff"])
def test_note_text_may_hold_del_and_c1(c):
    s = Signer.from_seed(ORIGIN, bytes(32))
    text = f"a{c}b\n".encode()
    assert open_note(sign_note(text, [s]), [s.verifier]).text == text


def test_signature_lines_are_split_from_the_text_at_the_last_blank_line():
    s = Signer.from_seed(ORIGIN, bytes(32))
    text = b"a\n\nb\n"  # a blank line inside the text
    assert parse_note(sign_note(text, [s])).text == text


# ---- checkpoints: three lines, the origin's characters, the size bound ---------------------

def body(origin: str = ORIGIN, size: str = "7", root: str = ROOT_B64, extra: str = "") -> bytes:
    return f"{origin}\n{size}\n{root}\n{extra}".encode()


@pytest.mark.parametrize("origin", ["a", "!", "~", "x" * 1000, "clearinghouse.example/feeds/tid",
                                    "".join(chr(c) for c in range(0x21, 0x7f) if c != 0x2b)])
def test_origins_are_printable_ascii_without_plus(origin):
    assert parse_checkpoint_body(body(origin)).origin == origin
    assert check_origin(origin) == origin


@pytest.mark.parametrize("origin", ["", "a b", "a+b", "a\tb", "caf\u00e9.example", "a\x7fb", "a\u0085b",
                                    "a\u00a0b", "a\u2003b", "\ufeffa", "cosignature/v1"])
def test_other_origins_are_malformed(origin):
    with pytest.raises(MalformedError, match="origin") as info:
        parse_checkpoint_body(body(origin))
    assert info.value.kind == "malformed"
    with pytest.raises(InputError):
        check_origin(origin)  # feed create / follow refuse what no checkpoint may carry


@pytest.mark.parametrize("size, ok", [
    ("0", True), ("9223372036854775807", True),
    ("9223372036854775808", False), ("18446744073709551615", False), ("99999999999999999999", False),
    ("07", False), ("-1", False), ("+7", False), (" 7", False), ("7 ", False), ("", False), ("0x7", False),
    ("\u0667", False),  # ARABIC-INDIC DIGIT SEVEN: int() would take it
])
def test_tree_size_is_a_canonical_decimal_up_to_2_63_minus_1(size, ok):
    if ok:
        assert parse_checkpoint_body(body(size=size)).size == int(size)
    else:
        with pytest.raises(MalformedError):
            parse_checkpoint_body(body(size=size))


@pytest.mark.parametrize("root", [base64.b64encode(bytes(31)).decode(), base64.b64encode(bytes(33)).decode(),
                                  ROOT_B64.rstrip("="), ROOT_B64 + "=", ROOT_B64[:-2] + "B="])
def test_root_is_canonical_base64_of_32_bytes(root):
    with pytest.raises(MalformedError):
        parse_checkpoint_body(body(root=root))


def test_extension_lines_are_malformed_and_the_wrong_origin_is_signature():
    s = Signer.from_seed(ORIGIN, bytes(32))
    with pytest.raises(MalformedError, match="extension lines") as info:
        open_checkpoint(sign_note(body(extra="ext\n"), [s]), ORIGIN, [s.verifier])
    assert info.value.kind == "malformed"
    # Signed by the trusted key (named after the origin), but for another origin.
    other = sign_note(body(origin="example.org/feeds/other"), [s])
    with pytest.raises(SignatureError, match="origin") as info:
        open_checkpoint(other, ORIGIN, [s.verifier])
    assert info.value.kind == "signature"


# ---- the empty tree -------------------------------------------------------------------

def test_the_empty_tree():
    s = Signer.from_seed(ORIGIN, bytes(32))
    cp = Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    assert cp.body() == f"{ORIGIN}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n".encode()
    assert open_checkpoint(cp.sign([s]), ORIGIN, [s.verifier]).checkpoint == cp
    fresh = V.TrustedState(verified=None, applied_size=0, compact=CompactRange(), version=0)
    with pytest.raises(NothingNew):  # a fresh mirror: nothing to apply, the same (empty) tree
        V.check_progress(fresh, cp)
    with pytest.raises(ForkError):  # a size-0 checkpoint with another root is not the empty tree
        V.check_progress(fresh, Checkpoint(ORIGIN, 0, bytes(32)))
    # Every tree extends the empty one: the proof from size 0 is empty, and only
    # the empty tree's root is accepted as the old root.
    assert verify_consistency(0, 5, EMPTY_ROOT, b"any root", [])
    assert not verify_consistency(0, 5, bytes(32), b"any root", [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, b"any root", [EMPTY_ROOT])
    # A mirror at size 0 has nothing to prove consistency against.
    assert V._known_prefixes(fresh, Checkpoint(ORIGIN, 5, bytes(32))) == []
