"""The count-sketch hash: one definition, evaluated by the torch reference and by the Triton kernel.

The family
----------
A sketch of width ``w = 2**L`` maps coordinate ``g`` (a *global* coordinate: ``offset + j`` for element
``j`` of the piece being sketched) to a bucket ``h(g) ∈ [0, w)`` and a sign ``s(g) ∈ {+1, -1}``, and
``S(x)[b] = Σ_{g: h(g)=b} s(g) x[g]``. Both are pure functions of ``(g, w, seed)``:

* ``seed`` → four 32-bit keys ``k0..k3`` (:func:`seed_keys`, splitmix64).
* Coordinates are cut into chunks of ``w``: chunk ``c = g >> L``, position ``p = g & (w - 1)``.
* Each chunk gets a seeded XOR mask and a seeded sign key (:func:`chunk_params`)::

      m(c) = H(c; k0, k1) & (w - 1)        H(c; ka, kb) = mix(mix(lo32(c) ^ ka) ^ hi32(c) ^ kb)
      t(c) = H(c; k2, k3)

  where ``mix`` is Wellons' ``lowbias32`` (:func:`lowbias32`), a bijection of uint32 with low bias.
* ``h(g) = p ^ m(c)`` (:func:`xor_permute`) — within a chunk a bijection, so two coordinates of one chunk
  never share a bucket.
* ``s(g) = -1`` iff bit 31 of ``mix(p ^ t(c))`` is set (:func:`sign_mask` returns that bit in place, the
  form in which the kernel XORs it into the IEEE sign bit of the value).

Why inner products stay unbiased, and their variance
----------------------------------------------------
``<S a, S b> = Σ_g a_g b_g + Σ_{g≠g', h(g)=h(g')} s(g) s(g') a_g b_{g'}``. Two distinct coordinates
sharing a bucket always lie in different chunks, whose sign keys come from independent hash values, so
``E[s(g) s(g')] = 0`` and the estimate is unbiased for every input (norms included: ``a = b``).

For two coordinates in different chunks ``c ≠ c'``, ``h(g) = h(g')`` iff ``m(c) ^ m(c') = p ^ p'``; with
the masks independent and uniform on ``[0, w)`` this happens with probability exactly ``1/w`` — the
pairwise collision probability of a uniform hash. With signs independent of each other and of the buckets,

    Var <S a, S b> = (1/w) Σ_{unordered pairs {g, g'} in different chunks} (a_g b_{g'} + a_{g'} b_g)².

Summed over *all* pairs this is the textbook count-sketch variance
``(1/w) (‖a‖²‖b‖² + <a,b>² − 2 Σ_g a_g² b_g²)``. Every pair contributes a square, so leaving out the
pairs inside one chunk can only lower it: the layout's variance is at most the textbook one for every
input, and no input (spikes, constants, strided patterns) makes it collide more than a uniform hash. For a
vector spanning many chunks the same-chunk pairs are about 1/#chunks of all pairs and the textbook formula
holds; a vector inside one chunk (D ≤ w at an aligned offset) is sketched without any collision — a
signed permutation, exact inner products, variance 0.

The "independent" above is the usual hash-function idealisation: the keys are seeded 32-bit hash
outputs, and statistical tests (tests/test_count_sketch.py) check the mean and variance against the
formula over many seeds, including adversarial inputs.

One definition, two evaluators
------------------------------
The functions below are plain Python on integer *arrays* using only ``^ >> & * +`` and integer literals.
They run

* in torch on int64 tensors holding values in ``[0, 2**32)``: each product is masked with
  ``& 0xFFFFFFFF``; int64 multiplication wraps modulo 2**64, so the low 32 bits are the exact uint32
  product;
* in Triton on ``tl.uint32`` values, where the same masks are no-ops: ``congrad.kernels.triton_kernel`` wraps
  these very functions with ``triton.jit`` (calls between them are re-bound to their jitted
  counterparts), so there is no second copy of the arithmetic that could drift. A test evaluates both on
  many coordinates, offsets beyond 2**40 included, and requires equality bit for bit.

Rules for editing this file: the functions must stay valid Triton (no Python control flow on values, no
globals other than the functions listed in ``JIT_FUNCTIONS``, no annotations), and every literal must fit
in uint32.
"""

from __future__ import annotations

import operator

MIN_LOG_WIDTH = 8
MAX_LOG_WIDTH = 22

_M64 = (1 << 64) - 1


def lowbias32(x):
    """Chris Wellons' ``lowbias32`` integer hash: a bijection of uint32 (xorshift-multiply, twice)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    return x


def chunk_hash(c_lo, c_hi, ka, kb):
    """A 32-bit hash of a 64-bit chunk index given as its two uint32 halves, under keys ``ka, kb``."""
    return lowbias32(lowbias32(c_lo ^ ka) ^ c_hi ^ kb)


def chunk_params(c_lo, c_hi, k0, k1, k2, k3, wmask):
    """Per-chunk XOR mask (in ``[0, w)``, ``wmask = w - 1``) and 32-bit sign key of chunk ``c``."""
    xmask = chunk_hash(c_lo, c_hi, k0, k1) & wmask
    skey = chunk_hash(c_lo, c_hi, k2, k3)
    return xmask, skey


def xor_permute(v, xmask):
    """Position → bucket within a chunk (and, being an involution, bucket → position)."""
    return v ^ xmask


def sign_mask(p, skey):
    """``0x80000000`` where the sign of position ``p`` (in a chunk with sign key ``skey``) is negative,
    else 0: bit 31 of ``lowbias32(p ^ skey)``, left in place so it can be XORed into a float's sign bit."""
    return lowbias32(p ^ skey) & 0x80000000


# The functions above that the Triton kernel uses, in dependency order (a function may call only
# functions listed before it).
JIT_FUNCTIONS = ("lowbias32", "chunk_hash", "chunk_params", "xor_permute", "sign_mask")


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64 (Steele, Lea & Flood): (new state, 64-bit output)."""
    state = (state + 0x9E3779B97F4A7C15) & _M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return state, z ^ (z >> 31)


def seed_keys(seed) -> tuple[int, int, int, int]:
    """The four 32-bit keys of a seed (any Python integer; taken modulo 2**64)."""
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}") from None
    state, a = _splitmix64(seed & _M64)
    _, b = _splitmix64(state)
    return a & 0xFFFFFFFF, a >> 32, b & 0xFFFFFFFF, b >> 32


def log2_width(width) -> int:
    """``log2(width)``, checking that width is an integer power of two in ``[2**8, 2**22]``."""
    if isinstance(width, bool):
        raise TypeError("width must be an integer power of two, got a bool")
    try:
        w = operator.index(width)
    except TypeError:
        raise TypeError(f"width must be an integer power of two, got {type(width).__name__}") from None
    if w <= 0 or w & (w - 1):
        raise ValueError(f"width must be a power of two, got {w}")
    log_w = w.bit_length() - 1
    if not MIN_LOG_WIDTH <= log_w <= MAX_LOG_WIDTH:
        raise ValueError(f"width must be between 2**{MIN_LOG_WIDTH} and 2**{MAX_LOG_WIDTH}, got {w} = 2**{log_w}")
    return log_w
