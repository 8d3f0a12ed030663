"""Entry codec strictness (pure): entries round-trip, and the decoder refuses
what is not an entry as ``malformed``, never with a crash.
"""
import msgpack
import pytest

from federation.core.entries import Add, Seal, Withdraw, decode, encode
from federation.core.errors import MalformedError

ADD = Add("sha256", bytes(range(32)), "case-1", ("csam", "tid"), 1700000000)


@pytest.mark.parametrize("entry", [
    ADD,
    Add("photodna", bytes(144), "c", (), 0),
    Withdraw("hash_error", 5, "md5", bytes(16)),
    Withdraw("legal", 5, "md5", bytes(16), "case-9"),
    Withdraw("submitter_request", 5, case="case-9"),
    Seal(3, 7, 10, bytes(2048)),
])
def test_roundtrip(entry):
    assert decode(encode(entry)) == entry


def _pack(m):
    return msgpack.packb(m, use_bin_type=True)


GOOD = {"v": 1, "op": "add", "type": "md5", "hash": bytes(16), "case": "c", "labels": [], "time": 1}


@pytest.mark.parametrize("mutate, msg", [
    (lambda m: m.update(v=2), "version"),
    (lambda m: m.update(op="delete"), "unknown entry op"),
    (lambda m: m.update(type="crc32"), "unknown hash type"),
    (lambda m: m.update(hash=bytes(15)), "want 16"),
    (lambda m: m.update(hash="00" * 16), "not a msgpack bin"),
    (lambda m: m.update(case="has space"), "case id"),
    (lambda m: m.update(case=""), "case id"),
    (lambda m: m.update(labels=["b", "a"]), "sorted"),
    (lambda m: m.update(labels=["UPPER"]), "label"),
    (lambda m: m.update(time=-1), "not an unsigned integer"),
    (lambda m: m.update(time=True), "not an unsigned integer"),
    (lambda m: m.update(extra=1), "keys"),
    (lambda m: m.pop("labels"), "want 'labels'"),
])
def test_decode_rejects(mutate, msg):
    m = dict(GOOD)
    mutate(m)
    with pytest.raises(MalformedError, match=msg):
        decode(_pack(m))


def test_decode_rejects_reordered_keys_and_non_canonical_ints():
    m = dict(GOOD)
    reordered = {k: m[k] for k in ["op", "v", "type", "hash", "case", "labels", "time"]}
    with pytest.raises(MalformedError, match="want 'v'"):
        decode(_pack(reordered))
    canonical = _pack(GOOD)
    # time=1 as uint32 (0xce) instead of a positive fixint
    non_canonical = canonical[:-1] + b"\xce\x00\x00\x00\x01"
    with pytest.raises(MalformedError, match="shortest form"):
        decode(non_canonical)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x93\x01\x02\x03", _pack(GOOD) + b"\x00", b"\x81\x01\x02"])
def test_decode_garbage_is_malformed_not_a_crash(data):
    with pytest.raises(MalformedError):
        decode(data)
