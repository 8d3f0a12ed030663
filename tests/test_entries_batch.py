"""Entry codec strictness and operator batch parsing (pure)."""
import io

import msgpack
import pytest

from federation.core.batch import parse_hash, read_batch
from federation.core.entries import Add, Seal, Withdraw, decode, encode
from federation.core.errors import InputError, MalformedError

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


def test_parse_hash_forms():
    assert parse_hash("MD5", "9E107D9D372BB6826BD81D3542A419D6") == bytes.fromhex("9e107d9d372bb6826bd81d3542a419d6")
    pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    assert parse_hash("pdq", pdq) == bytes.fromhex(pdq)
    raw = bytes(range(144))
    assert parse_hash("photodna", raw.hex()) == raw
    assert parse_hash("photodna", ",".join(map(str, raw))) == raw
    import base64
    assert parse_hash("photodna", base64.b64encode(raw).decode()) == raw
    for t, v in [("md5", "xyz"), ("sha1", "00" * 19), ("pdq", "g" * 64), ("nope", "00"), ("photodna", "1,2,3")]:
        with pytest.raises(InputError):
            parse_hash(t, v)


def test_csv_batch_from_readme():
    text = """op,type,hash,case,labels,reason
add,md5,9e107d9d372bb6826bd81d3542a419d6,c-17,csam;tid,
add,pdq,f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,c-17,csam,
withdraw,md5,9e107d9d372bb6826bd81d3542a419d6,,,hash_error
withdraw,,,c-17,,submitter_request
"""
    ops = list(read_batch(io.StringIO(text), "csv"))
    assert ops[0] == Add("md5", bytes.fromhex("9e107d9d372bb6826bd81d3542a419d6"), "c-17", ("csam", "tid"), 0)
    assert ops[2] == Withdraw("hash_error", 0, "md5", bytes.fromhex("9e107d9d372bb6826bd81d3542a419d6"))
    assert ops[3] == Withdraw("submitter_request", 0, case="c-17")


def test_jsonl_batch_and_errors_name_the_line():
    good = '{"op":"add","type":"sha1","hash":"' + "ab" * 20 + '","case":"x","labels":["a"]}\n'
    assert len(list(read_batch(io.StringIO(good + "\n" + good), "jsonl"))) == 2
    for bad, msg in [("{nope\n", "line 2: invalid JSON"), ('{"op":"add"}\n', "line 2: add needs a case"),
                     ('{"op":"withdraw","case":"x"}\n', "line 2: withdraw needs a reason"),
                     ('{"op":"add","case":"x","type":"md5","hash":"00","colour":1}\n', "line 2: unknown field")]:
        with pytest.raises(InputError, match=msg):
            list(read_batch(io.StringIO(good + bad), "jsonl"))
    with pytest.raises(InputError, match="line 2"):
        list(read_batch(io.StringIO("op,type,hash,case\nadd,md5,zz,c\n"), "csv"))
