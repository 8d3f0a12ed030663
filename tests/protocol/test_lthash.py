"""LtHash16 properties (the byte-exact vectors live in tests/vectors)."""
import hashlib
import random

from federation.core.entries import element
from federation.core.lthash import DIGEST_BYTES, DOMAIN, LtHash16, digest_of, element_hash


def test_empty_is_zero():
    assert LtHash16().digest() == bytes(DIGEST_BYTES)


def test_definition_on_one_element():
    e = element("md5", bytes(16), "c", ("a",))
    expected = hashlib.shake_256(DOMAIN + e).digest(2048)
    assert element_hash(e) == expected == digest_of([e])


def test_order_independence_and_inverse():
    rng = random.Random(1)
    elems = [rng.randbytes(20) for _ in range(5000)]
    a = LtHash16().add(elems)
    shuffled = elems[:]
    rng.shuffle(shuffled)
    b = LtHash16()
    for e in shuffled:
        b.add([e])
    assert a == b
    a.remove(elems[:2500])
    assert a == LtHash16().add(elems[2500:])
    a.remove(elems[2500:])
    assert a.digest() == bytes(DIGEST_BYTES)


def test_lanes_wrap_mod_2_16():
    e = b"x"
    lanes = lambda d: [int.from_bytes(d[i:i + 2], "little") for i in range(0, 2048, 2)]  # noqa: E731
    h = lanes(element_hash(e))
    d = lanes(LtHash16().add([e] * 3).digest())
    assert d == [(3 * x) % 65536 for x in h]


def test_element_encoding_is_injective_on_boundaries():
    assert element("md5", b"ab", "c", ()) != element("md5", b"a", "bc", ())
    assert element("md5", bytes(16), "c", ("a", "b")) != element("md5", bytes(16), "c", ("ab",))
