"""Operator batches (CSV and JSONL) parsed into operations (pure): the hash
forms, the README's batch, errors that name the line; values of the wrong
type, fields over the csv module's limit, rows longer than the header and
withdrawals naming a type without a hash are input errors, never guesses.
"""
from __future__ import annotations

import hashlib
import io

import pytest

from federation.core.batch import parse_hash, read_batch
from federation.core.entries import Add, Withdraw
from federation.core.errors import InputError


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


def md5(i) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


@pytest.mark.parametrize("line", [
    '{"op":1,"type":"md5","hash":"%s","case":"c"}' % md5(0),
    '{"op":"add","type":"md5","hash":123,"case":"c"}',
    '{"op":"add","type":"md5","hash":"%s","case":5}' % md5(0),
    '{"op":"add","type":["md5"],"hash":"%s","case":"c"}' % md5(0),
    '{"op":"withdraw","type":"md5","hash":"%s","reason":7}' % md5(0),
    "[" * 100_000,
])
def test_jsonl_values_of_the_wrong_type_are_input_errors(line):
    with pytest.raises(InputError, match="line 1"):
        list(read_batch(io.StringIO(line + "\n"), "jsonl"))


def test_csv_field_over_the_csv_module_limit_is_an_input_error():
    text = 'op,type,hash,case,labels,reason\nadd,md5,"' + "0" * 200_000 + "\n"
    with pytest.raises(InputError, match="line"):
        list(read_batch(io.StringIO(text, newline=""), "csv"))


def test_csv_row_with_more_fields_than_the_header_is_refused_not_truncated():
    # The operator separated labels with a comma: "violence" would be dropped silently.
    text = f"op,type,hash,case,labels\nadd,md5,{md5(1)},c-1,csam,violence\n"
    with pytest.raises(InputError, match="line 2"):
        list(read_batch(io.StringIO(text, newline=""), "csv"))
    # Trailing empty fields are harmless.
    ops = list(read_batch(io.StringIO(f"op,type,hash,case,labels\nadd,md5,{md5(1)},c-1,csam,,\n", newline=""), "csv"))
    assert len(ops) == 1 and ops[0].labels == ("csam",)


def test_withdraw_naming_a_type_without_a_hash_is_not_a_whole_case_withdrawal():
    with pytest.raises(InputError, match="line 2"):
        list(read_batch(io.StringIO("op,type,hash,case,labels,reason\nwithdraw,md5,,c-17,,legal\n", newline=""),
                        "csv"))
    with pytest.raises(InputError, match="line 1"):
        list(read_batch(io.StringIO('{"op":"withdraw","type":"md5","hash":"","case":"c-17","reason":"legal"}\n'),
                        "jsonl"))
    # The documented case withdrawal still works.
    ops = list(read_batch(io.StringIO("op,type,hash,case,labels,reason\nwithdraw,,,c-17,,legal\n", newline=""), "csv"))
    assert ops[0].by_case and ops[0].case == "c-17"
