"""docs/PROTOCOL.md section 4, rule by rule: the exact msgpack forms an entry may use.

Each byte string here is built by hand. For each rule there is an encoding
that a *lenient* decoder -- any msgpack library, values checked afterwards,
strings and binaries read alike (the old msgpack "raw" type, still how many
libraries read) -- accepts as the very same entry, and that the reference
decoder must refuse (``malformed``). The property test at the end states the
point of the rules: whatever ``decode`` accepts, ``encode`` gives back byte for
byte, so an entry has one encoding and one leaf hash.
"""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from federation.core import entries as E
from federation.core.errors import MalformedError
from federation.core.lthash import LtHash16


# ---- msgpack by hand ---------------------------------------------------------------

def fixstr(s: str) -> bytes:
    b = s.encode()
    assert len(b) <= 31
    return bytes([0xa0 | len(b)]) + b


def str8(s: str) -> bytes:
    b = s.encode()
    return b"\xd9" + bytes([len(b)]) + b


def str16(s: str) -> bytes:
    b = s.encode()
    return b"\xda" + len(b).to_bytes(2, "big") + b


def bin8(b: bytes) -> bytes:
    return b"\xc4" + bytes([len(b)]) + b


def uint(n: int) -> bytes:
    """The smallest unsigned form (what section 4 requires)."""
    if n <= 0x7f:
        return bytes([n])
    for fmt, size in ((0xcc, 1), (0xcd, 2), (0xce, 4), (0xcf, 8)):
        if n < 1 << (8 * size):
            return bytes([fmt]) + n.to_bytes(size, "big")
    raise AssertionError(n)


def entry(pairs: list[tuple[bytes, bytes]], header: bytes | None = None) -> bytes:
    """A map of already-encoded (key, value) pairs; the header defaults to a fixmap."""
    if header is None:
        header = bytes([0x80 | len(pairs)])
    return header + b"".join(k + v for k, v in pairs)


def k(name: str) -> bytes:
    return fixstr(name)


MD5 = bytes(16)
T = 1700000000
ADD_PAIRS = [(k("v"), b"\x01"), (k("op"), fixstr("add")), (k("type"), fixstr("md5")), (k("hash"), bin8(MD5)),
             (k("case"), fixstr("case-1")), (k("labels"), b"\x91" + fixstr("csam")), (k("time"), uint(T))]
ADD = E.Add("md5", MD5, "case-1", ("csam",), T)
DIGEST = LtHash16().digest()
SEAL_PAIRS = [(k("v"), b"\x01"), (k("op"), fixstr("seal")), (k("version"), uint(7)), (k("time"), uint(T)),
              (k("count"), uint(0)), (k("digest"), b"\xc5\x08\x00" + DIGEST)]
SEAL = E.Seal(7, T, 0, DIGEST)
WD_CASE_PAIRS = [(k("v"), b"\x01"), (k("op"), fixstr("withdraw")), (k("case"), fixstr("case-1")),
                 (k("reason"), fixstr("legal")), (k("time"), uint(T))]
WD_CASE = E.Withdraw("legal", T, case="case-1")


def replace(pairs, key: str, value: bytes | None = None, new_key: bytes | None = None):
    out = []
    for kk, vv in pairs:
        if kk == k(key):
            out.append((new_key if new_key is not None else kk, value if value is not None else vv))
        else:
            out.append((kk, vv))
    return out


def lenient(data: bytes) -> E.Entry:
    """What a decoder without section 4's form rules makes of ``data``: any
    msgpack, str and bin read alike, duplicate keys (last wins), unknown keys
    and trailing bytes ignored, then the same value checks as ours."""
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
    unpacker.feed(data)
    m = next(unpacker)  # the first object; a stream reader does not look further
    m = {key.decode(): value for key, value in m.items()}

    def s(x):
        return x.decode() if isinstance(x, bytes) else x

    op = s(m["op"])
    if m["v"] != 1:
        raise MalformedError("version")
    if op == "add":
        e = E.Add(s(m["type"]), m["hash"], s(m["case"]), tuple(s(x) for x in m["labels"]), m["time"])
    elif op == "withdraw":
        e = E.Withdraw(s(m["reason"]), m["time"], s(m.get("type")), m.get("hash"), s(m.get("case")))
    else:
        e = E.Seal(m["version"], m["time"], m["count"], m["digest"])
    return E.validate(e)


def test_the_hand_built_entries_are_the_canonical_ones():
    assert entry(ADD_PAIRS) == E.encode(ADD) and E.decode(entry(ADD_PAIRS)) == ADD
    assert entry(SEAL_PAIRS) == E.encode(SEAL) and E.decode(entry(SEAL_PAIRS)) == SEAL
    assert entry(WD_CASE_PAIRS) == E.encode(WD_CASE) and E.decode(entry(WD_CASE_PAIRS)) == WD_CASE
    assert lenient(entry(ADD_PAIRS)) == ADD


# Every case: (bytes, the entry a lenient decoder reads, words of our error).
LENIENT_GETS_WRONG = {
    # keys are fixstr
    "key 'v' as str8": (entry([(str8("v"), b"\x01")] + ADD_PAIRS[1:]), ADD, "want 'v' as fixstr"),
    "key 'time' as str16": (entry(replace(ADD_PAIRS, "time", new_key=str16("time"))), ADD, "want 'time'"),
    # strings: fixstr up to 31 bytes, str8 from 32; str16/str32 never
    "type as str8": (entry(replace(ADD_PAIRS, "type", str8("md5"))), ADD, "str8, want fixstr"),
    "op as str16": (entry(replace(ADD_PAIRS, "op", str16("add"))), ADD, "str16/str32"),
    "case as str16": (entry(replace(ADD_PAIRS, "case", str16("case-1"))), ADD, "str16/str32"),
    "label as str8": (entry(replace(ADD_PAIRS, "labels", b"\x91" + str8("csam"))), ADD, "str8, want fixstr"),
    "reason as str32": (entry(replace(WD_CASE_PAIRS, "reason", b"\xdb\x00\x00\x00\x05legal")), WD_CASE,
                        "str16/str32"),
    # unsigned integers: positive fixint, then uint8/16/32/64, each the smallest that holds the value
    "v as uint8": (entry(replace(ADD_PAIRS, "v", b"\xcc\x01")), ADD, "shortest form"),
    "v as int8": (entry(replace(ADD_PAIRS, "v", b"\xd0\x01")), ADD, "not an unsigned integer"),
    "time as uint64": (entry(replace(ADD_PAIRS, "time", b"\xcf" + T.to_bytes(8, "big"))), ADD, "shortest form"),
    "time as int64": (entry(replace(ADD_PAIRS, "time", b"\xd3" + T.to_bytes(8, "big"))), ADD,
                      "not an unsigned integer"),
    "version as uint16": (entry(replace(SEAL_PAIRS, "version", b"\xcd\x00\x07")), SEAL, "shortest form"),
    "count as uint8": (entry(replace(SEAL_PAIRS, "count", b"\xcc\x00")), SEAL, "shortest form"),
    "count as int32": (entry(replace(SEAL_PAIRS, "count", b"\xd2\x00\x00\x00\x00")), SEAL,
                       "not an unsigned integer"),
    # binaries: bin8 up to 255 bytes, bin16 from 256
    "hash as bin16": (entry(replace(ADD_PAIRS, "hash", b"\xc5\x00\x10" + MD5)), ADD, "bin16, want bin8"),
    "hash as bin32": (entry(replace(ADD_PAIRS, "hash", b"\xc6\x00\x00\x00\x10" + MD5)), ADD, "bin32"),
    "digest as bin32": (entry(replace(SEAL_PAIRS, "digest", b"\xc6\x00\x00\x08\x00" + DIGEST)), SEAL, "bin32"),
    # str and bin are different families
    "a bin where a str belongs": (entry(replace(ADD_PAIRS, "type", bin8(b"md5"))), ADD, "type is not a msgpack str"),
    "a str where a bin belongs": (entry(replace(ADD_PAIRS, "hash", b"\xb0" + MD5)), ADD, "hash is not a msgpack bin"),
    "case as bin": (entry(replace(WD_CASE_PAIRS, "case", bin8(b"case-1"))), WD_CASE, "case is not a msgpack str"),
    # arrays: fixarray up to 15 items, array16 for 16 (the most allowed)
    "labels as array16": (entry(replace(ADD_PAIRS, "labels", b"\xdc\x00\x01" + fixstr("csam"))), ADD,
                          "want fixarray"),
    "labels as array32": (entry(replace(ADD_PAIRS, "labels", b"\xdd\x00\x00\x00\x01" + fixstr("csam"))), ADD,
                          "not a fixarray or array16"),
    # the map: a fixmap, keys in the order of the entry's form, each once, nothing after it
    "map16 header": (entry(ADD_PAIRS, header=b"\xde\x00\x07"), ADD, "not a msgpack fixmap"),
    "keys reordered": (entry(ADD_PAIRS[:3] + [ADD_PAIRS[4], ADD_PAIRS[3]] + ADD_PAIRS[5:]), ADD, "want 'hash'"),
    "op before v": (entry([ADD_PAIRS[1], ADD_PAIRS[0]] + ADD_PAIRS[2:]), ADD, "want 'v'"),
    "seal keys reordered": (entry(SEAL_PAIRS[:2] + [SEAL_PAIRS[3], SEAL_PAIRS[2]] + SEAL_PAIRS[4:]), SEAL,
                            "want 'version'"),
    "withdraw form keys reordered": (entry(WD_CASE_PAIRS[:2] + [WD_CASE_PAIRS[3], WD_CASE_PAIRS[2]]
                                           + WD_CASE_PAIRS[4:]), WD_CASE, "want 'case'"),
    "an unknown key at the end": (entry(ADD_PAIRS + [(k("note"), fixstr("x"))]), ADD, "says 8 keys"),
    "a key twice": (entry(ADD_PAIRS + [(k("time"), uint(T))]), ADD, "says 8 keys"),
    "a nil type in a withdrawal by case": (entry(WD_CASE_PAIRS[:2] + [(k("type"), b"\xc0")] + WD_CASE_PAIRS[2:]),
                                           WD_CASE, "type is not a msgpack str"),
    "bytes after the map": (entry(ADD_PAIRS) + b"\xc0", ADD, "1 bytes after the entry"),
}


@pytest.mark.parametrize("case", list(LENIENT_GETS_WRONG))
def test_a_lenient_decoder_accepts_what_section_4_forbids(case):
    data, reads_as, words = LENIENT_GETS_WRONG[case]
    assert data != E.encode(reads_as)
    assert lenient(data) == reads_as  # the trap: the same entry from other bytes, so another leaf hash
    with pytest.raises(MalformedError, match=words) as info:
        E.decode(data)
    assert info.value.kind == "malformed"


# ---- the forms that are allowed at the edges ------------------------------------------

@pytest.mark.parametrize("entry_, first_bytes", [
    (E.Add("md5", MD5, "c" * 31, (), 0), fixstr("c" * 31)),            # 31 bytes: still fixstr
    (E.Add("md5", MD5, "c" * 32, (), 0), str8("c" * 32)),               # 32: str8
    (E.Add("md5", MD5, "c" * 64, ("l" * 32,), 0), str8("l" * 32)),      # a 32-byte label: str8
    (E.Add("md5", MD5, "c", tuple(f"l{i:02d}" for i in range(15)), 0), b"\x9f"),  # 15 labels: fixarray
    (E.Add("md5", MD5, "c", tuple(f"l{i:02d}" for i in range(16)), 0), b"\xdc\x00\x10"),  # 16: array16
    (E.Add("md5", MD5, "c", (), 127), k("time") + b"\x7f"),
    (E.Add("md5", MD5, "c", (), 128), k("time") + b"\xcc\x80"),
    (E.Add("md5", MD5, "c", (), 65535), k("time") + b"\xcd\xff\xff"),
    (E.Add("md5", MD5, "c", (), 65536), k("time") + b"\xce\x00\x01\x00\x00"),
    (E.Add("md5", MD5, "c", (), 1 << 32), k("time") + b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
    (E.Add("photodna", bytes(144), "c", (), 0), b"\xc4\x90"),           # 144 bytes: bin8
    (SEAL, b"\xc5\x08\x00"),                                            # 2,048 bytes: bin16
])
def test_edges_of_each_form_decode(entry_, first_bytes):
    data = E.encode(entry_)
    assert first_bytes in data
    assert E.decode(data) == entry_


# ---- value rules (section 4) that the form rules do not imply ---------------------------

@pytest.mark.parametrize("value, ok", [((1 << 63) - 1, True), (1 << 63, False), ((1 << 64) - 1, False)])
def test_seal_count_and_version_fit_a_signed_64_bit_integer(value, ok):
    for pairs in (replace(SEAL_PAIRS, "count", uint(value)), replace(SEAL_PAIRS, "version", uint(value))):
        data = entry(pairs)
        if ok:
            E.decode(data)
        else:
            with pytest.raises(MalformedError, match=r"out of range"):
                E.decode(data)


def test_time_is_below_2_to_the_40():
    assert E.decode(entry(replace(ADD_PAIRS, "time", uint((1 << 40) - 1)))).time == (1 << 40) - 1
    with pytest.raises(MalformedError, match="out of range"):
        E.decode(entry(replace(ADD_PAIRS, "time", uint(1 << 40))))


def test_v_other_than_1_is_unsupported():
    with pytest.raises(MalformedError, match="unsupported entry version 2"):
        E.decode(entry(replace(ADD_PAIRS, "v", b"\x02")))


WD_HASH_PAIRS = [(k("v"), b"\x01"), (k("op"), fixstr("withdraw")), (k("type"), fixstr("sha1")),
                 (k("hash"), bin8(b"\x01" * 20)), (k("case"), fixstr("case-1")), (k("reason"), fixstr("duplicate")),
                 (k("time"), uint(T))]


@pytest.mark.parametrize("pairs, words", [
    (replace(WD_HASH_PAIRS, "hash", bin8(b"\x01" * 16)), "sha1 hash is 16 bytes, want 20"),
    (replace(WD_HASH_PAIRS, "type", fixstr("SHA1")), "unknown hash type"),
    (replace(WD_HASH_PAIRS, "case", fixstr("case-1\n")), "case id"),
    (replace(WD_HASH_PAIRS, "case", fixstr("case 1")), "case id"),
    (replace(WD_HASH_PAIRS, "case", fixstr("")), "case id"),
    (replace(WD_HASH_PAIRS, "reason", fixstr("because")), "unknown withdraw reason"),
    (replace(WD_CASE_PAIRS, "case", str8("c" * 65)), "case id"),
    (replace(WD_CASE_PAIRS, "case", fixstr("caf\u00e9")), "case id"),
])
def test_withdrawals_obey_the_hash_length_and_case_rules_of_adds(pairs, words):
    with pytest.raises(MalformedError, match=words):
        E.decode(entry(pairs))


def test_withdrawal_by_hash_forms_decode():
    assert E.decode(entry(WD_HASH_PAIRS)) == E.Withdraw("duplicate", T, "sha1", b"\x01" * 20, "case-1")
    every_case = [p for p in WD_HASH_PAIRS if p[0] != k("case")]
    assert E.decode(entry(every_case)) == E.Withdraw("duplicate", T, "sha1", b"\x01" * 20)


def test_strings_must_be_utf8_and_entries_at_most_4096_bytes():
    with pytest.raises(MalformedError, match="not valid UTF-8"):
        E.decode(entry(replace(ADD_PAIRS, "case", b"\xa2\xff\xfe")))
    with pytest.raises(MalformedError, match="over 4096"):
        E.decode(entry(ADD_PAIRS) + bytes(4097 - len(entry(ADD_PAIRS))))


def test_labels_rules():
    with pytest.raises(MalformedError, match="at most 16"):
        E.decode(entry(replace(ADD_PAIRS, "labels", b"\xdc\x00\x11" + fixstr("a") * 17)))
    with pytest.raises(MalformedError, match="sorted and unique"):
        E.decode(entry(replace(ADD_PAIRS, "labels", b"\x92" + fixstr("a") + fixstr("a"))))
    with pytest.raises(MalformedError, match="sorted and unique"):
        E.decode(entry(replace(ADD_PAIRS, "labels", b"\x92" + fixstr("b") + fixstr("a"))))


# ---- one entry, one encoding --------------------------------------------------------------

_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-", min_size=1, max_size=64)
_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._:-", min_size=1, max_size=32)
_time = st.integers(0, (1 << 40) - 1)
_hash = st.sampled_from(sorted(E.HASH_LENGTHS)).flatmap(
    lambda t: st.tuples(st.just(t), st.binary(min_size=E.HASH_LENGTHS[t], max_size=E.HASH_LENGTHS[t])))
_entries = st.one_of(
    st.builds(lambda h, c, labels, t: E.Add(h[0], h[1], c, tuple(sorted(labels)), t),
              _hash, _text, st.sets(_label, max_size=16), _time),
    st.builds(lambda h, c, r, t: E.Withdraw(r, t, h[0], h[1], c),
              _hash, st.none() | _text, st.sampled_from(E.WITHDRAW_REASONS), _time),
    st.builds(lambda c, r, t: E.Withdraw(r, t, case=c), _text, st.sampled_from(E.WITHDRAW_REASONS), _time),
    st.builds(E.Seal, st.integers(1, (1 << 63) - 1), _time, st.integers(0, (1 << 63) - 1),
              st.binary(min_size=2048, max_size=2048)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entries)
def test_msgpack_python_writes_exactly_the_grammar(e):
    data = E.encode(e)
    assert E.decode(data) == e
    assert msgpack.packb(E._to_map(e), use_bin_type=True) == data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entries, st.lists(st.tuples(st.integers(0, 4200), st.integers(0, 255), st.sampled_from("xid")),
                          min_size=1, max_size=3))
def test_whatever_decode_accepts_encodes_back_to_the_same_bytes(e, edits):
    data = bytearray(E.encode(e))
    for pos, byte, how in edits:
        pos %= len(data) + 1
        if how == "x" and pos < len(data):
            data[pos] = byte
        elif how == "i":
            data.insert(pos, byte)
        elif pos < len(data):
            del data[pos]
    try:
        got = E.decode(bytes(data))
    except MalformedError:
        return
    assert E.encode(got) == bytes(data)
