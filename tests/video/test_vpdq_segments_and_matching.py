"""The vpdq hash type (docs/PROTOCOL.md section 4, "vpdq"): canonical segments,
their bounds, reassembly, text forms, and vPDQ's matching -- checked against
python-threatexchange's own vPDQ code where it has one."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from federation.core import entries as E
from federation.core import vpdq as V
from federation.core.batch import operations, parse_hash
from federation.core.errors import InputError, MalformedError

from support.system_tools import require_vpdq


def threatexchange_vpdq():
    """python-threatexchange's vPDQ extension (it imports Meta's ``vpdq``)."""
    require_vpdq()
    from threatexchange.extensions.vpdq import vpdq_brute_matcher, vpdq_util
    return vpdq_brute_matcher, vpdq_util


def frames(n: int, seed: int = 0, quality=100) -> list[V.Frame]:
    rng = np.random.default_rng(seed)
    return [V.Frame(i * 30, quality if isinstance(quality, int) else int(quality[i]),
                    rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), i * 1000) for i in range(n)]


def test_a_video_is_cut_into_canonical_segments_and_reassembled():
    video = frames(V.SEGMENT_FRAMES * 2 + 1)
    segs = V.segments(video)
    assert [len(s) for s in segs] == [V.MAX_SEGMENT_BYTES] * 2 + [V.MIN_SEGMENT_BYTES]
    decoded = [V.decode_segment(s) for s in segs]
    assert [(d.part, d.parts) for d in decoded] == [(0, 3), (1, 3), (2, 3)]
    assert {d.video for d in decoded} == {V.video_id(video)}
    assert V.reassemble(decoded[::-1]) == tuple(video)
    assert V.segments(video) == segs  # one frame list, one set of segments
    assert V.reassemble(decoded[:2]) is None  # a part missing
    assert V.reassemble(decoded + decoded[:1]) is None  # a part twice
    other = V.decode_segment(V.segments(frames(V.SEGMENT_FRAMES * 2 + 1, seed=9))[1])
    assert V.reassemble([decoded[0], other, decoded[2]]) is None  # not the frames its id names


@pytest.mark.parametrize("n", [0, 19, V.HEADER_BYTES, V.MIN_SEGMENT_BYTES - 1, V.MIN_SEGMENT_BYTES + 1,
                               V.MAX_SEGMENT_BYTES + V.FRAME_BYTES, 1 << 20])
def test_segment_length_is_bounded_before_any_frame_is_read(n):
    with pytest.raises(MalformedError, match="vpdq hash is"):
        V.decode_segment(b"\x00" * n)


def _segment(part: int, parts: int, fr: list[V.Frame]) -> bytes:
    return struct.pack(">16sHH", b"v" * 16, part, parts) + b"".join(f.record() for f in fr)


@pytest.mark.parametrize("value, fragment", [
    (_segment(1, 1, frames(1)), "part 1 of 1"),
    (_segment(0, 0, frames(1)), "part 0 of 0"),
    (_segment(0, V.MAX_PARTS + 1, frames(80)), "part 0 of 1025"),
    (_segment(0, 2, frames(79)), "every segment but the last"),
    (_segment(0, 1, frames(2)[::-1]), "increase strictly"),
    (_segment(0, 1, [V.Frame(0, 101, b"\x00" * 32, 0)]), "quality 101"),
])
def test_segment_header_and_frames_are_checked(value, fragment):
    with pytest.raises(MalformedError, match=fragment):
        V.decode_segment(value)


def test_the_largest_vpdq_add_fits_an_entry_and_round_trips():
    labels = tuple(sorted(f"l{i:031d}" for i in range(E.MAX_LABELS)))
    seg = V.segments(frames(V.SEGMENT_FRAMES))[0]
    add = E.Add("vpdq", seg, "c" * 64, labels, (1 << 40) - 1)
    raw = E.encode(add)
    assert len(raw) <= E.MAX_ENTRY_BYTES
    assert raw[raw.index(b"\xa4hash") + 5:][:3] == b"\xc5" + len(seg).to_bytes(2, "big")  # bin16
    assert E.decode(raw) == add
    # A vpdq hash that is not a segment is malformed in an entry, as a wrong-length md5 is.
    bad = raw.replace(b"\xc5" + len(seg).to_bytes(2, "big") + seg, b"\xc4\x10" + b"\x00" * 16)
    with pytest.raises(MalformedError, match="vpdq hash is 16 bytes"):
        E.decode(bad)


def test_element_of_a_vpdq_record_has_a_u16_hash_length():
    seg = V.segments(frames(10))[0]
    el = E.element("vpdq", seg, "c", ("csam",))
    assert el[:5] == b"\x04vpdq" and el[5:7] == len(seg).to_bytes(2, "big") and el[7:7 + len(seg)] == seg
    assert E.element("pdq", b"\x01" * 32, "c", ())[:5] == b"\x03pdq\x20"  # other types unchanged


def test_text_forms_of_vpdq_and_threatexchange_parse_to_the_same_frames():
    video = frames(5)
    vpdq_text = V.format_frames(video)
    assert V.parse_frames(vpdq_text) == video
    # python-threatexchange's signal string has no frame numbers: frames are numbered 0, 1, ...
    _, util = threatexchange_vpdq()
    signal = util.vpdq_to_json([util.VpdqCompactFeature(f.pdq.hex(), f.quality, f.timestamp_ms / 1000) for f in video])
    assert V.signal_string(video) == signal
    assert [(f.pdq, f.quality, f.timestamp_ms) for f in V.parse_frames(signal)] == \
        [(f.pdq, f.quality, f.timestamp_ms) for f in video]
    assert util.json_to_vpdq(V.signal_string(video))[0].pdq_hex == video[0].pdq.hex()


@pytest.mark.parametrize("text, fragment", [
    ("", "at least one frame"),
    ("0,100,zz,0.0", "not a vPDQ frame|64-hex-digit"),
    ("0,101," + "a" * 64 + ",0.0", "quality 0..100"),
    ("0,100," + "a" * 64 + ",nan", "out of range"),
    ("0,100," + "a" * 64 + ",1e300", "out of range"),
    ("1,100," + "a" * 64 + ",0\n1,100," + "b" * 64 + ",1", "increase strictly"),
    ('["' + "a" * 64 + ',100"]', "not a vPDQ frame"),
    ("[" * 5000, "JSON list"),
    (("0,100," + "a" * 64 + ",0.0\n") * 3, "increase strictly"),
])
def test_bad_video_text_is_an_input_error(text, fragment):
    with pytest.raises(InputError, match=fragment):
        V.parse_frames(text)


def test_video_text_is_bounded_before_it_is_parsed():
    line = "0,100," + "a" * 64 + ",0.0\n"
    with pytest.raises(InputError, match="4 frames, at most 3"):
        V.parse_frames("".join(line.replace("0,", f"{i},", 1) for i in range(4)), max_frames=3)
    with pytest.raises(InputError, match="too long"):
        V.parse_frames("x" * (3 * 128 + 1), max_frames=3)


def test_a_batch_line_with_a_whole_video_publishes_one_add_per_segment():
    video = frames(V.SEGMENT_FRAMES + 1)
    ops = operations({"op": "add", "type": "vpdq", "hash": V.format_frames(video), "case": "c1", "labels": "csam"})
    assert [op.value for op in ops] == V.segments(video) and {op.case for op in ops} == {"c1"}
    ops = operations({"op": "withdraw", "type": "vpdq", "hash": V.format_frames(video), "reason": "legal"})
    assert [op.value for op in ops] == V.segments(video)
    seg = V.segments(video)[1]
    assert parse_hash("vpdq", seg.hex()) == seg  # one segment in hex, as the change stream shows it
    with pytest.raises(InputError, match="2 segments"):
        parse_hash("vpdq", V.format_frames(video))


def _compact(fr):
    return [threatexchange_vpdq()[1].VpdqCompactFeature(f.pdq.hex(), f.quality, f.timestamp_ms / 1000) for f in fr]


@pytest.mark.parametrize("seed", range(6))
def test_match_percents_are_those_of_threatexchanges_brute_matcher(seed):
    rng = np.random.default_rng(seed)
    target = frames(40, seed, quality=rng.integers(30, 101, 40))
    query = []
    for i, f in enumerate(target[:30]):  # a copy: frames flipped by 0..45 bits, some lost, some duplicated
        v = int.from_bytes(f.pdq, "big")
        for b in rng.choice(256, int(rng.integers(0, 46)), replace=False):
            v ^= 1 << int(b)
        query.append(V.Frame(i, int(rng.integers(30, 101)), v.to_bytes(32, "big"), i * 1000))
    query += [V.Frame(100 + i, 100, query[i].pdq, 0) for i in range(3)]  # exact duplicates (deduped)
    query += frames(8, seed + 50)[:8]
    query = [V.Frame(i, f.quality, f.pdq, f.timestamp_ms) for i, f in enumerate(query)]
    for distance in (0, 15, 31, 40):
        theirs = threatexchange_vpdq()[0].match_VPDQ_hash_brute(_compact(query), _compact(target), 50, distance)
        ours = V.match_percents(V.usable(query), V.usable(target), distance)
        assert ours == pytest.approx((theirs.query_match_percent, theirs.compared_match_percent))
