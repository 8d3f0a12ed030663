"""Multi-index hashing over 256-bit PDQ values, in numpy: exact Hamming range search.

A ``Table`` is immutable: built once from an ``(n, 32)`` uint8 array, then
searched. ``search(queries, t)`` returns *every* stored value within Hamming
distance ``t`` of each query (no false negatives, no false positives), with
its distance. Bit ``i`` of a value is bit ``7 - i % 8`` of byte ``i // 8``
(the first bit is the most significant), as everywhere in PDQ.

Why it is exact (Norouzi, Punjani and Fleet, "Fast exact search in Hamming
space with multi-index hashing", 2014): the 256 bits are cut into
``M = 11`` disjoint chunks (8 of 23 bits, 3 of 24). Write ``t = a * M + b``
with ``0 <= b < M``. If every chunk among the first ``b + 1`` differed in at
least ``a + 1`` bits and every other chunk in at least ``a``, the distance
would be at least ``(b + 1)(a + 1) + (M - b - 1) a = t + 1``. So a value
within ``t`` agrees with the query, up to ``a`` flipped bits, on one of the
first ``b + 1`` chunks, or up to ``a - 1`` on one of the others. Probing every
such key of every chunk finds it; each candidate's full distance is then
computed, so nothing farther is returned.

Each chunk has a bucket table in compressed-sparse-row form: ``starts``
(one offset per bucket, uint32) into ``ids`` (value numbers sorted by
bucket). A table with fewer values than a chunk has keys uses fewer bucket
bits (the key's low bits): a value whose chunk key is ``k ^ m`` lands in
bucket ``(k ^ m) & F = (k & F) ^ (m & F)``, so probing the folded masks is
still exact, and folding merges masks, so fewer probes.

Why these numbers (measured at 10M random values, threshold 31, this
machine, bench/README.md): 11 chunks of 23-24 bits probe 2,843 buckets per
query and find about 3,000 candidates; faiss's 16 x 16-bit multi-hash (what
python-threatexchange uses) checks about 40,000. Candidates cost more than
probes (a random 32-byte read each), and longer chunks need more memory for
bucket offsets: 2^23-2^24 buckets x 11 chunks is 448 MiB at 10M values,
plus 4 bytes per value per chunk for ``ids`` and the 32 bytes of the value.
All steps are whole-array numpy operations over every probe and candidate
of a group of ``GROUP`` queries (``np.take`` for the random reads: 6x faster
than fancy indexing a 2-D array), so a query costs a few dozen numpy calls.
The floor at 10M is those random reads: in bench/pdq_profile.py ``take``
(bucket offsets, ids, values) is about half of a query's time, the distance
step a fifth.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from federation.core.errors import InputError

BITS = 256
BYTES = 32
CHUNK_BITS = (23,) * 8 + (24,) * 3
CHUNKS = len(CHUNK_BITS)
CHUNK_START = tuple(sum(CHUNK_BITS[:i]) for i in range(CHUNKS))
MIN_BUCKET_BITS = 8
MAX_VALUES = (1 << 32) // CHUNKS - 1  # ids and offsets are uint32
# A scan reads every value; multi-index hashing reads ``probes`` offsets and
# ``probes * occupancy`` values at random. Relative costs measured here
# (ns per probe, per candidate, per scanned value) choose between them.
PROBE_COST, CANDIDATE_COST, SCAN_COST = 25.0, 60.0, 3.0
# Queries probed together. At 10M (bench/pdq_profile.py, per CPU second):
# groups of 1-4 ~6,000 queries/s, 8 ~4,100-5,900, 16 ~3,600: past a few
# queries the temporaries (probes, candidates) fall out of cache.
GROUP = 4


def as_values(data) -> np.ndarray:
    """``data`` (bytes of whole values, or an array) as a C-contiguous (n, 32) uint8 array."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) % BYTES:
            raise InputError(f"{len(data)} bytes is not a whole number of {BYTES}-byte PDQ values")
        return np.frombuffer(data, dtype=np.uint8).reshape(-1, BYTES)
    arr = np.ascontiguousarray(data, dtype=np.uint8)
    return arr.reshape(-1, BYTES)


def chunk_keys(values: np.ndarray, chunk: int) -> np.ndarray:
    """The ``chunk``-th key (uint32) of each of ``values`` ((n, 32) uint8)."""
    start, bits = CHUNK_START[chunk], CHUNK_BITS[chunk]
    byte, shift = divmod(start, 8)
    # The key's bits lie within 4 bytes at most (shift + bits <= 7 + 24 = 31 bits).
    span = (shift + bits + 7) // 8
    word = np.zeros(len(values), dtype=np.uint32)
    for i in range(span):
        word = (word << np.uint32(8)) | values[:, byte + i].astype(np.uint32)
    word >>= np.uint32(8 * span - shift - bits)
    return word & np.uint32((1 << bits) - 1)


def radii(threshold: int) -> tuple[int, ...]:
    """Per chunk, the most flipped bits a probe needs for ``threshold`` (-1: skip the chunk)."""
    a, b = divmod(threshold, CHUNKS)
    return tuple(a if i <= b else a - 1 for i in range(CHUNKS))


@functools.lru_cache(maxsize=256)
def flip_masks(bits: int, radius: int, bucket_bits: int) -> np.ndarray:
    """Distinct masks of at most ``radius`` of ``bits`` bits, folded to ``bucket_bits`` low bits."""
    if radius < 0:
        return np.zeros(0, dtype=np.uint32)
    fold = (1 << bucket_bits) - 1
    if radius >= bucket_bits:  # every bucket
        return np.arange(fold + 1, dtype=np.uint32)
    parts = [np.zeros(1, dtype=np.uint32)]
    singles = np.uint32(1) << np.arange(bits, dtype=np.uint32)
    for k in range(1, min(radius, bits) + 1):
        combos = np.array(list(itertools.combinations(range(bits), k)), dtype=np.intp)
        parts.append(np.bitwise_or.reduce(singles[combos], axis=1))
    return np.unique(np.concatenate(parts) & np.uint32(fold))


def bucket_bits_for(n: int) -> int:
    """Bucket bits of a table of ``n`` values: about one value per bucket."""
    return max(MIN_BUCKET_BITS, math.ceil(math.log2(max(n, 1))))


@dataclass(frozen=True)
class Plan:
    """The probes of one threshold on one table: bucket numbers relative to each query."""

    chunk: np.ndarray   # (P,) chunk of each probe
    mask: np.ndarray    # (P,) folded flip mask (int64, as the keys)
    base: np.ndarray    # (P,) first bucket of that chunk in the concatenated tables (int64)


class Table:
    """An immutable multi-index-hashing table over ``values`` ((n, 32) uint8)."""

    def __init__(self, values: np.ndarray, bucket_bits: tuple[int, ...], starts: np.ndarray, ids: np.ndarray):
        self.values = values
        self.words = values.view(np.uint64)  # (n, 4): XOR and popcount do not care about byte order
        self.bucket_bits = bucket_bits
        self.starts = starts  # concatenated per-chunk offsets, each chunk's with a final end entry
        self.ids = ids
        firsts = [0]
        for b in bucket_bits:
            firsts.append(firsts[-1] + (1 << b) + 1)
        self.firsts = tuple(firsts)
        self._plans: dict[int, Plan] = {}

    def __len__(self) -> int:
        return len(self.values)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.starts.nbytes + self.ids.nbytes

    @classmethod
    def build(cls, values: np.ndarray, bucket_bits: int | None = None) -> "Table":
        """Index ``values``: per chunk, one sort of (bucket << 32 | id) (numpy's vectorised
        sort of uint64 takes ~0.1 s for 10M) and one ``bincount`` for the offsets."""
        values = as_values(values)
        n = len(values)
        if n > MAX_VALUES:
            raise InputError(f"a PDQ table holds at most {MAX_VALUES} values, not {n}")
        bb = bucket_bits if bucket_bits is not None else bucket_bits_for(n)
        bits = tuple(min(bb, c) for c in CHUNK_BITS)
        starts = np.empty(sum((1 << b) + 1 for b in bits), dtype=np.uint32)
        ids = np.empty(CHUNKS * n, dtype=np.uint32)
        at = 0
        numbers = np.arange(n, dtype=np.uint64)
        for c, b in enumerate(bits):
            keys = chunk_keys(values, c) & np.uint32((1 << b) - 1)
            packed = np.sort((keys.astype(np.uint64) << np.uint64(32)) | numbers)
            ids[c * n:(c + 1) * n] = packed.astype(np.uint32)  # the low 32 bits: the value's number
            del packed
            counts = np.bincount(keys, minlength=1 << b)
            starts[at] = c * n
            np.cumsum(counts, out=starts[at + 1:at + 1 + (1 << b)])
            starts[at + 1:at + 1 + (1 << b)] += np.uint32(c * n)
            at += (1 << b) + 1
        return cls(values, bits, starts, ids)

    # ---- search --------------------------------------------------------------

    def plan(self, threshold: int) -> Plan:
        p = self._plans.get(threshold)
        if p is None:
            chunks, masks, bases = [], [], []
            for c, (r, b) in enumerate(zip(radii(threshold), self.bucket_bits)):
                m = flip_masks(CHUNK_BITS[c], r, b)
                chunks.append(np.full(len(m), c, dtype=np.intp))
                masks.append(m.astype(np.int64))
                bases.append(np.full(len(m), self.firsts[c], dtype=np.int64))
            p = self._plans[threshold] = Plan(np.concatenate(chunks), np.concatenate(masks), np.concatenate(bases))
        return p

    def probes(self, threshold: int) -> int:
        return len(self.plan(threshold).mask)

    def prefers_scan(self, threshold: int) -> bool:
        """Whether reading every value is cheaper than probing, for this threshold."""
        n = len(self)
        if n == 0:
            return False
        probes = self.probes(threshold)
        occupancy = CHUNKS * n / (len(self.starts) - CHUNKS)
        return probes * (PROBE_COST + occupancy * CANDIDATE_COST) > n * SCAN_COST

    def search(self, queries: np.ndarray, threshold: int,
               method: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query number, value number, distance) with distance <= ``threshold``,
        each pair once, sorted by query then value number. ``method``: "probe"
        or "scan" (both exact; tests pin each), else the cheaper one."""
        queries = as_values(queries)
        if len(self) == 0 or len(queries) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        if method == "scan" or (method is None and self.prefers_scan(threshold)):
            return scan(self.words, queries, threshold)
        out = [self._probe(queries[s:s + GROUP], threshold) for s in range(0, len(queries), GROUP)]
        if len(out) == 1:
            return out[0]
        return (np.concatenate([q + s for q, s in zip((o[0] for o in out), range(0, len(queries), GROUP))]),
                np.concatenate([o[1] for o in out]), np.concatenate([o[2] for o in out]))

    def contains(self, queries: np.ndarray, block: int = 4096) -> np.ndarray:
        """Whether each query is one of the values (distance 0), whole-array.

        An equal value agrees on every chunk, so each query reads one bucket:
        of its chunks, the one whose bucket holds the fewest values (a
        crowded bucket of one chunk is passed over)."""
        queries = as_values(queries)
        out = np.zeros(len(queries), dtype=bool)
        if len(self) == 0:
            return out
        for s in range(0, len(queries), block):
            q = queries[s:s + block]
            buckets = np.stack([(chunk_keys(q, c) & np.uint32((1 << b) - 1)).astype(np.int64) + self.firsts[c]
                                for c, b in enumerate(self.bucket_bits)], axis=1)      # (nq, CHUNKS)
            counts = np.take(self.starts, buckets + 1).astype(np.int64) - np.take(self.starts, buckets)
            pick = np.argmin(counts, axis=1)
            bucket = buckets[np.arange(len(q)), pick]
            first = np.take(self.starts, bucket).astype(np.int64)
            count = counts[np.arange(len(q)), pick]
            total = int(count.sum())
            if total == 0:
                continue
            ends = np.cumsum(count)
            pos = np.arange(total, dtype=np.int64) + np.repeat(first - (ends - count), count)
            qn = np.repeat(np.arange(len(q), dtype=np.int64), count)
            same = (np.take(self.words, np.take(self.ids, pos), axis=0) == q.view(np.uint64)[qn]).all(axis=1)
            out[s + qn[same]] = True
        return out

    def _probe(self, queries: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``search`` by probing, for a group of queries."""
        p = self.plan(threshold)
        nq, np_ = len(queries), len(p.mask)
        keys = query_keys(queries, self.bucket_bits)
        buckets = ((keys[:, p.chunk] ^ p.mask) + p.base).ravel()  # (nq * P,)
        # Two gathers from the contiguous offsets (np.take of an overlapping
        # strided view copies the whole view first: 20 ms a call at 1M).
        first = np.take(self.starts, buckets).astype(np.int64)
        count = np.take(self.starts, buckets + 1).astype(np.int64) - first
        total = int(count.sum())
        if total == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        # Every candidate position: the runs [first, first + count) laid end to end.
        ends = np.cumsum(count)
        pos = np.arange(total, dtype=np.int64) + np.repeat(first - (ends - count), count)
        cand = np.take(self.ids, pos)
        return _verify(self.words, queries.view(np.uint64), count.reshape(nq, np_).sum(axis=1), cand, threshold)


def query_keys(queries: np.ndarray, bucket_bits: tuple[int, ...]) -> np.ndarray:
    """The (folded) chunk keys of a few queries, (nq, CHUNKS) int64: through
    Python integers, 11 shifts a query (a few us), where ``chunk_keys``'s
    whole-array passes cost 30 us a chunk for one query."""
    spans = [(BITS - s - c, (1 << b) - 1) for s, c, b in zip(CHUNK_START, CHUNK_BITS, bucket_bits)]
    rows = []
    for q in queries:
        x = int.from_bytes(q.tobytes(), "big")
        rows.append([(x >> shift) & fold for shift, fold in spans])
    return np.array(rows, dtype=np.int64).reshape(len(queries), CHUNKS)


def _verify(words: np.ndarray, qwords: np.ndarray, per_query: np.ndarray, cand: np.ndarray,
            threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances of the candidates ``cand`` (the first ``per_query[0]`` of query 0,
    and so on); the pairs within ``threshold``, each once."""
    qn = np.repeat(np.arange(len(per_query), dtype=np.int64), per_query)
    got = np.take(words, cand, axis=0)  # (C, 4) uint64: the random reads
    got ^= qwords[qn] if len(per_query) > 1 else qwords
    np.bitwise_count(got, out=got)
    dist = got[:, 0] + got[:, 1] + got[:, 2] + got[:, 3]
    hit = np.flatnonzero(dist <= threshold)
    qn, cand, dist = qn[hit], cand[hit].astype(np.int64), dist[hit].astype(np.int64)
    # A value is found once per chunk it agrees on: keep each pair once.
    pair = qn * (1 << 32) + cand
    pair, first = np.unique(pair, return_index=True)
    return qn[first], cand[first], dist[first]


def scan(words: np.ndarray, queries: np.ndarray, threshold: int,
         block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The brute-force answer of ``Table.search`` (every value read for every query)."""
    qwords = as_values(queries).view(np.uint64)
    qs, vs, ds = [], [], []
    for start in range(0, len(words), block):
        w = words[start:start + block]
        for i, q in enumerate(qwords):
            d = np.bitwise_count(w[:, 0] ^ q[0])
            for k in range(1, 4):
                d += np.bitwise_count(w[:, k] ^ q[k])
            hit = np.nonzero(d <= threshold)[0]
            if len(hit):
                qs.append(np.full(len(hit), i, dtype=np.int64))
                vs.append(hit.astype(np.int64) + start)
                ds.append(d[hit].astype(np.int64))
    if not qs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    q, v, d = np.concatenate(qs), np.concatenate(vs), np.concatenate(ds)
    order = np.lexsort((v, q))
    return q[order], v[order], d[order]
