"""Every decoder of bytes from a network or a user, fuzzed (issue 10, section 5).

Random bytes and mutated valid seeds (real signed notes, real bundles,
entries, snapshots, trust files, configs, batches, witness requests) go to
each decoder. The only outcomes allowed are a returned object or one of our
errors with a kind (``support.fuzz.outcome``); the witness's own refusal
carries a 4xx status. Anything else -- ``ValueError``, ``RecursionError``,
``OverflowError``, ``UnicodeDecodeError``, a hang -- fails the property.
Findings are pinned as named tests in ``test_hostile_parsers.py``.
"""
from __future__ import annotations

import io
import json

import pytest
import zstandard
from hypothesis import given, strategies as st

from federation.core import entries as E
from federation.core.batch import read_batch
from federation.core.checkpoint import open_checkpoint, parse_checkpoint_body
from federation.core.errors import FederationError, WitnessRefusal
from federation.core.layout import parse_tile_path, tile_path
from federation.core.note import Cosigner, open_note, parse_note, parse_vkey
from federation.core.snapshot_format import SnapshotReader, parse_index
from federation.core.tiles import parse_bundle, parse_hash_tile
from federation.core.trustfile import parse_trust, quorum_cosignatures
from federation.node.config import parse_config
from federation.trust.witness import Witness

from support.fuzz import as_text, fuzz_settings, mutated, outcome
from support.fuzz_seeds import (BUNDLE, CHECKPOINT, CONFIG, COSIGNED, CSV, ENTRIES, GRAMMAR_TILE_PATHS, INDEX, JSONL,
                                LOG, NOW, ORIGIN, SNAPSHOTS, TRUST, WITNESSES, WITNESS_REQUEST, WITNESS_REQUEST_PROOF,
                                _snapshot)


# ---- seeds: real, valid objects ---------------------------------------------------------

def bytes_or(seeds: list[bytes], max_size: int = 2048):
    return st.one_of(st.binary(max_size=max_size), mutated(seeds))


# ---- notes, checkpoints, keys -----------------------------------------------------------

@fuzz_settings(300)
@given(bytes_or([CHECKPOINT, COSIGNED]))
def test_fuzz_note_and_checkpoint(data):
    outcome(parse_note, data)
    outcome(open_note, data, [LOG.verifier])
    outcome(open_checkpoint, data, ORIGIN, [LOG.verifier])
    outcome(parse_checkpoint_body, data)


@fuzz_settings(200)
@given(st.one_of(st.text(max_size=200), mutated([LOG.vkey.encode(), WITNESSES[0].vkey.encode()]).map(as_text)))
def test_fuzz_vkey(text):
    outcome(parse_vkey, text)


@fuzz_settings(300)
@given(st.one_of(st.text(max_size=200), GRAMMAR_TILE_PATHS,
                 mutated([tile_path(0, 1234067, 5).encode(), tile_path(-1, 7).encode(),
                          tile_path(2, 0, 1).encode()]).map(as_text)))
def test_fuzz_tile_path(text):
    outcome(parse_tile_path, text)


@fuzz_settings(150)
@given(bytes_or([bytes(range(32)) * 3]), st.integers(0, 256))
def test_fuzz_hash_tile(data, width):
    outcome(parse_hash_tile, data, width)


# ---- bundles and entries ----------------------------------------------------------------

@fuzz_settings(300)
@given(bytes_or([BUNDLE]), st.integers(0, 256))
def test_fuzz_bundle_and_its_entries(data, width):
    got = outcome(parse_bundle, data, width)
    if isinstance(got, list):
        for entry in got:
            outcome(E.decode, entry)


@fuzz_settings(400)
@given(bytes_or(ENTRIES))
def test_fuzz_entry(data):
    outcome(E.decode, data)


# ---- snapshots --------------------------------------------------------------------------

def read_snapshot(data: bytes) -> int:
    reader = SnapshotReader(io.BytesIO(data), read_size=4096)
    return sum(len(batch) for batch in reader.records(batch=64))


@fuzz_settings(300)
@given(bytes_or(SNAPSHOTS))
def test_fuzz_snapshot_header_and_reader_plain_and_zstd(data):
    outcome(read_snapshot, data)


@fuzz_settings(150)
@given(mutated([_snapshot(False)]))
def test_fuzz_snapshot_content_inside_a_valid_zstd_frame(data):
    outcome(read_snapshot, zstandard.ZstdCompressor(level=1).compress(data))


@fuzz_settings(300)
@given(bytes_or([INDEX]))
def test_fuzz_snapshot_index(data):
    outcome(parse_index, data)


@fuzz_settings(100)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                        ["snapshots", "minimum_index", "sha256", "version", "size", "count", "bytes", "compressed"]),
                        c, max_size=8), max_leaves=30))
def test_fuzz_snapshot_index_shapes(doc):
    outcome(parse_index, json.dumps(doc).encode())


# ---- trust files, node configs, batches --------------------------------------------------

@fuzz_settings(300)
@given(bytes_or([TRUST]))
def test_fuzz_trust_file(data):
    trust = outcome(parse_trust, data)
    if not isinstance(trust, Exception):
        outcome(quorum_cosignatures, trust, COSIGNED, NOW)


@fuzz_settings(100)
@given(bytes_or([COSIGNED, CHECKPOINT]))
def test_fuzz_cosignatures_under_a_trust_file(data):
    outcome(quorum_cosignatures, parse_trust(TRUST), data, NOW)


@fuzz_settings(300)
@given(st.one_of(st.text(max_size=400), mutated([CONFIG]).map(as_text)))
def test_fuzz_node_config(text):
    outcome(parse_config, text)


@fuzz_settings(250)
@given(bytes_or([CSV, JSONL]), st.sampled_from(["csv", "jsonl"]), st.booleans())
def test_fuzz_batch_csv_and_jsonl(data, fmt, as_bytes):
    lines = io.BytesIO(data) if as_bytes else io.StringIO(as_text(data), newline="")
    outcome(lambda: list(read_batch(lines, fmt)))


# ---- the witness's add-checkpoint request ------------------------------------------------

@pytest.fixture(scope="module")
def witness(tmp_path_factory):
    w = Witness(tmp_path_factory.mktemp("witness") / "w.db", Cosigner.generate("witness.example"))
    w.add_log(ORIGIN, [LOG.vkey])
    yield w
    w.close()


@fuzz_settings(300)
@given(data=bytes_or([WITNESS_REQUEST, WITNESS_REQUEST_PROOF]))
def test_fuzz_witness_add_checkpoint(witness, data):
    e = outcome(witness.add_checkpoint, data)  # refusals are ours now: outcome() returns them
    if isinstance(e, FederationError):  # the spec's refusals: each a 4xx answer
        assert isinstance(e, WitnessRefusal) and 400 <= e.status < 500, e
