"""Seeds of the fuzzers: real, valid objects made from fixed keys (so every
run mutates the same bytes). Shared by the decoder and the route fuzzers.
"""
from __future__ import annotations

import msgpack
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from federation.core import entries as E
from federation.core.checkpoint import Checkpoint
from federation.core.lthash import LtHash16
from federation.core.note import Cosigner, Signer, parse_note
from federation.core.snapshot_format import SnapshotRef, encode_index
from federation.core.tiles import encode_bundle
from federation.core.trustfile import render_trust, sign_trust
from federation.core.witnessformat import add_checkpoint_body

ORIGIN = "fuzz.example/feeds/t"
LOG = Signer.from_seed(ORIGIN, bytes(range(32)))
ROOTS = [Signer.from_seed(f"fuzz.example/trust/root-{i}", bytes([i]) * 32) for i in (1, 2)]
WITNESSES = [Cosigner(f"witness-{i}.example", Ed25519PrivateKey.from_private_bytes(bytes([40 + i]) * 32))
             for i in (1, 2)]
NOW = 1_700_000_000


# ---- seeds: real, valid objects ---------------------------------------------------------

CHECKPOINT = Checkpoint(ORIGIN, 1234, bytes(range(32))).sign([LOG])
COSIGNED = CHECKPOINT + b"".join(w.cosign(parse_note(CHECKPOINT).text, NOW).line() for w in WITNESSES)
ADDS = [E.Add("md5", bytes([i]) * 16, f"case-{i}", ("csam", "tid"), NOW) for i in range(3)]
ENTRIES = [E.encode(a) for a in ADDS] + [
    E.encode(E.Withdraw("submitter_request", NOW, case="case-1")),
    E.encode(E.Withdraw("hash_error", NOW, "sha1", bytes(20))),
    E.encode(E.Withdraw("legal", NOW, "pdq", bytes(32), "case-2")),
    E.encode(E.Seal(7, NOW, 3, LtHash16().add([E.add_element(a) for a in ADDS]).digest())),
]
BUNDLE = encode_bundle(ENTRIES)
TRUST = sign_trust(render_trust(ORIGIN, 1, 3600, [LOG.vkey], [w.vkey for w in WITNESSES], 2,
                                [r.vkey for r in ROOTS], 2), ROOTS)
INDEX = encode_index([SnapshotRef("ab" * 32, 3, 700, 12, 4096, True), SnapshotRef("cd" * 32, 1, 9, 2, 90, False)],
                     256)


def _snapshot(compress: bool) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    raw = packer.pack({"v": 1, "origin": ORIGIN, "size": len(ENTRIES), "version": 7, "count": 3, "bundle": BUNDLE})
    raw += b"".join(packer.pack([a.hash_type, a.value, a.case, list(a.labels)]) for a in ADDS)
    return zstandard.ZstdCompressor(level=1).compress(raw) if compress else raw


SNAPSHOTS = [_snapshot(False), _snapshot(True)]
CONFIG = f'''[node]
listen = "127.0.0.1:8082"
home = "platform"
anonymous_rate = 5.5

[[publish]]
name = "internal"
access = "members"

[[follow]]
name = "tid"
origin = "{ORIGIN}"
vkeys = ["{LOG.vkey}"]
urls = ["http://127.0.0.1:8081/feeds/tid/", "http://127.0.0.1:8080/feeds/tid/"]
relay = true
wait = 5
'''.encode()
CSV = ("op,type,hash,case,labels,reason\nadd,md5,9e107d9d372bb6826bd81d3542a419d6,c-17,csam;tid,\n"
       "add,photodna,\"" + ",".join(["7"] * 144) + "\",c-18,ncii,\nwithdraw,,,c-17,,submitter_request\n").encode()
JSONL = (b'{"op":"add","type":"sha256","hash":"' + b"ab" * 32 + b'","case":"x","labels":["a","b"]}\n'
         b'{"op":"withdraw","type":"md5","hash":"9e107d9d372bb6826bd81d3542a419d6","reason":"hash_error"}\n')
WITNESS_REQUEST = add_checkpoint_body(0, [], CHECKPOINT)
WITNESS_REQUEST_PROOF = add_checkpoint_body(1000, [bytes([i]) * 32 for i in range(3)], CHECKPOINT)
# Paths from the grammar itself, with any number of index groups.
GRAMMAR_TILE_PATHS = st.builds(
    lambda level, groups, group, last, width: f"tile/{level}/" + f"x{group:03d}/" * groups + f"{last:03d}" + width,
    st.sampled_from(["entries", "0", "1", "63", "64", "99", "00"]), st.integers(0, 1600), st.integers(0, 999),
    st.integers(0, 999), st.sampled_from(["", ".p/1", ".p/255", ".p/256", ".p/0"]))
