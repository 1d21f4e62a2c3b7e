"""Triton count-sketch kernel: atomic-free, deterministic, reading the input once.

Layout
------
The hash (:mod:`congrad.kernels.hashing`) permutes each chunk of ``w`` consecutive global coordinates by XOR with
a seeded mask: coordinate ``c*w + p`` goes to bucket ``p ^ m(c)``. Turned around, bucket ``b`` receives
exactly one coordinate of every chunk, ``c*w + (b ^ m(c))``. So a program owns a block of ``BLOCK``
buckets of one row and *gathers*: for each chunk it loads ``x[c*w + (b ^ m(c))]`` for its buckets, applies
the signs, and accumulates in fp32 registers. No two programs write the same output, so there are no
atomics, and the sum for each bucket runs in chunk order — bit-identical from run to run.

For an aligned block of buckets ``[b0, b0 + BLOCK)`` the positions ``b ^ m(c)`` fill one aligned block of
``BLOCK`` consecutive positions (the XOR permutes inside it), so a warp reads whole 128-byte segments:
loads are coalesced even though each thread's addresses are data-dependent. Per value the kernel spends
a load, an XOR for the address, one ``lowbias32`` for the sign (two multiplies; the compiler drops the
xorshifts that cannot reach bit 31), an XOR of that bit into the float's sign bit, and an fp32 add; the
chunk hashes are computed once per chunk. For sm_90 (Triton 3.6 and 3.9 alike) the loop body is 129 SASS
instructions per 8 values at fp32 / width 2**16 (32 registers) and 240 per 16 values at bf16 (48
registers). At full read bandwidth (~2.9 TB/s) an H100 can issue about 41 instructions per fp32 value and
21 per bf16 value, so the loop should stay memory-bound — with a thinner margin for 2-byte input.

With ``offset`` the row covers global coordinates ``[offset, offset + D)``; the chunk grid stays the
global one, so only the first and last chunk are partial (masked loads) and piecewise sketches add up.

Parallelism: a single row at width 2**16 has only 64 bucket blocks, too few programs for a GPU, so the
chunks of a row are split into ``splits`` contiguous ranges; each (row, split, bucket block) program
writes a partial sketch to a workspace and a second small kernel adds the partials in split order (again
deterministic). ``splits`` aims at ``TARGET_PROGRAMS`` programs per row while keeping the workspace
traffic under ``MAX_WORKSPACE_FRACTION`` of the input read, and depends only on (D, width, offset, dtype)
— not on the number of rows or the device — so a row sketched alone or inside a batch gives bit-identical
results.

The hash functions are the ones of :mod:`congrad.kernels.hashing`, wrapped with ``triton.jit`` here (see
:func:`_build`), so the kernel and the torch reference cannot disagree about the hash.

Kernels are built on first use, in the mode Triton was imported in: interpreted (``TRITON_INTERPRET=1``
set before Triton's import; kernels then run on CPU tensors) or compiled.
"""

import contextlib
import os
import types
from dataclasses import dataclass

import torch

from . import hashing
from ._checks import check_args, interpret_enabled

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where Triton is not installed
    # The module stays importable (the kernel signatures below name tl.constexpr); _build() says what is missing.
    triton = None
    tl = types.SimpleNamespace(constexpr=None)

TARGET_PROGRAMS = 2048  # programs per row the chunk split aims at (an H100 has 132 SMs)
# Cap on the workspace traffic of the split (fp32 partials written, then read) relative to the input read.
MAX_WORKSPACE_FRACTION = 1 / 16
# Buckets per program: 8 values per thread per chunk for 4-byte input, 16 for 2-byte input (amortises the
# per-chunk hashing over more values where the value rate is highest).
BLOCK_BY_ELEM_SIZE = {4: 1024, 2: 2048}
REDUCE_BLOCK = 1024
_KEY_TAG = 1 << 32  # keys travel as int64 arguments tagged above bit 31 so Triton never retypes them


# --------------------------------------------------------------------------------------------------
# Kernel bodies. Plain functions here; _build() wraps them (and the hash functions) with triton.jit.
# --------------------------------------------------------------------------------------------------


def _sketch_kernel(
    x_ptr,
    y_ptr,
    D,
    stride_x,
    n_rows,
    n_splits,
    chunks_per_split,
    n_chunks,
    c_first,
    lead,
    k0,
    k1,
    k2,
    k3,
    W: tl.constexpr,
    BLOCK: tl.constexpr,
    MASKED: tl.constexpr,
    DIRECT: tl.constexpr,
    ACCUMULATE: tl.constexpr,
):
    NB: tl.constexpr = W // BLOCK
    pid = tl.program_id(0)
    blk = pid % NB
    rest = pid // NB
    split = rest % n_splits
    row = rest // n_splits

    ka = k0.to(tl.uint32)
    kb = k1.to(tl.uint32)
    kc = k2.to(tl.uint32)
    kd = k3.to(tl.uint32)
    c0 = c_first.to(tl.int64)
    lead64 = lead.to(tl.int64)
    d64 = D.to(tl.int64)

    b = blk * BLOCK + tl.arange(0, BLOCK)  # this program's buckets
    bu = b.to(tl.uint32)
    x_row = x_ptr + row.to(tl.int64) * stride_x
    i_lo = split * chunks_per_split
    i_hi = tl.minimum(i_lo + chunks_per_split, n_chunks)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(i_lo, i_hi):
        c = c0 + i  # global chunk index (int64)
        xmask, skey = chunk_params(c.to(tl.uint32), (c >> 32).to(tl.uint32), ka, kb, kc, kd, W - 1)
        p = xor_permute(bu, xmask)  # position, inside chunk c, of the value that lands in bucket b
        pi = p.to(tl.int32)
        start = (c - c0) * W - lead64  # index in the row of chunk c's first coordinate (< 0 if partial)
        ptrs = x_row + start + pi
        if MASKED:
            lo = tl.maximum(-start, 0).to(tl.int32)
            hi = tl.minimum(d64 - start, W).to(tl.int32)
            v = tl.load(ptrs, mask=(pi >= lo) & (pi < hi), other=0.0)
        else:
            v = tl.load(ptrs)
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True) ^ sign_mask(p, skey)
        acc += bits.to(tl.float32, bitcast=True)

    if DIRECT:
        y = y_ptr + row.to(tl.int64) * W + b
        if ACCUMULATE:
            acc = tl.load(y) + acc
        tl.store(y, acc)
    else:
        tl.store(y_ptr + (split.to(tl.int64) * n_rows + row) * W + b, acc)


def _reduce_kernel(ws_ptr, y_ptr, total, n_splits, BLOCK: tl.constexpr, ACCUMULATE: tl.constexpr):
    """y[k] (+)= Σ_s ws[s, k] for k < total, the splits added in order."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    src = ws_ptr + offs
    acc = tl.load(src, mask=m, other=0.0)
    for _ in range(1, n_splits):
        src += total
        acc += tl.load(src, mask=m, other=0.0)
    if ACCUMULATE:
        acc = tl.load(y_ptr + offs, mask=m, other=0.0) + acc
    tl.store(y_ptr + offs, acc, mask=m)


def _probe_kernel(
    g_ptr, bucket_ptr, sign_ptr, n, k0, k1, k2, k3, W: tl.constexpr, LOG_W: tl.constexpr, BLOCK: tl.constexpr
):
    """Bucket and sign mask of given global coordinates, for tests that compare the hash with torch's."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    g = tl.load(g_ptr + offs, mask=m, other=0).to(tl.int64)
    c = g >> LOG_W
    p = (g & (W - 1)).to(tl.uint32)
    xmask, skey = chunk_params(
        c.to(tl.uint32),
        (c >> 32).to(tl.uint32),
        k0.to(tl.uint32),
        k1.to(tl.uint32),
        k2.to(tl.uint32),
        k3.to(tl.uint32),
        W - 1,
    )
    tl.store(bucket_ptr + offs, xor_permute(p, xmask).to(tl.int64), mask=m)
    tl.store(sign_ptr + offs, sign_mask(p, skey).to(tl.int64), mask=m)


_KERNELS = ("_sketch_kernel", "_reduce_kernel", "_probe_kernel")
_DO_NOT_SPECIALIZE = {
    # run-time values that change between calls (seed keys, chunk position): one compiled variant for all
    # (and any argument the kernel calls .to() on: Triton turns an int argument equal to 1 into a constant)
    "_sketch_kernel": ["D", "c_first", "lead", "k0", "k1", "k2", "k3", "n_splits", "chunks_per_split", "n_chunks"],
    "_reduce_kernel": ["n_splits"],
    "_probe_kernel": ["k0", "k1", "k2", "k3"],
}
_built: types.SimpleNamespace | None = None


def _rebind(fn, namespace: dict):
    """``fn`` with ``namespace`` as its globals (same code, same source lines for Triton to parse)."""
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__qualname__, new.__doc__, new.__module__ = fn.__qualname__, fn.__doc__, fn.__module__
    new.__annotations__ = dict(fn.__annotations__)  # tl.constexpr parameters: not part of the code object
    new.__kwdefaults__ = fn.__kwdefaults__
    return new


def triton_interprets() -> bool:
    """Whether Triton was imported in interpreter mode (``TRITON_INTERPRET`` set at its import).

    Triton fixes the mode of its own library functions (``tl.zeros``, ``tl.cdiv``...) when it is imported,
    so kernels of this process can run only in that mode, whatever the environment says later.
    """
    return triton is not None and type(tl.cdiv).__name__ == "InterpretedFunction"


@contextlib.contextmanager
def _interpret_env(interpret: bool):
    """``TRITON_INTERPRET`` set to ``interpret`` for the duration (``triton.jit`` reads it when it wraps a
    function, and the compiler when it compiles one)."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


def _build() -> types.SimpleNamespace:
    """``triton.jit`` the hash functions of :mod:`congrad.kernels.hashing` and the kernels above, once, in the mode
    Triton was imported in.

    Each function is re-bound to a shared namespace in which the names of the hash functions and kernels
    refer to their jitted versions, so a jitted function calls jitted functions — the same source text
    the torch reference runs, with no copy.
    """
    global _built
    if triton is None:
        raise RuntimeError(
            "Triton is not installed: the Triton count-sketch kernel is unavailable "
            "(congrad.kernels.count_sketch_reference works without it)"
        )
    if _built is None:
        namespace = dict(vars(hashing))
        namespace.update(tl=tl, triton=triton)
        with _interpret_env(triton_interprets()):
            for name in hashing.JIT_FUNCTIONS:
                namespace[name] = triton.jit(_rebind(getattr(hashing, name), namespace))
            for name in _KERNELS:
                namespace[name] = triton.jit(
                    _rebind(globals()[name], namespace), do_not_specialize=_DO_NOT_SPECIALIZE[name]
                )
        _built = types.SimpleNamespace(**{n: namespace[n] for n in _KERNELS + hashing.JIT_FUNCTIONS})
    return _built


_TL_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def compile_offline(
    *,
    dtype: torch.dtype = torch.float32,
    width: int = 1 << 16,
    block: int | None = None,
    num_warps: int | None = None,
    masked: bool = False,
    direct: bool = False,
    accumulate: bool = False,
    arch: int = 90,
    kernel: str = "sketch",
):
    """Compile a variant of the sketch (or ``kernel="reduce"``) kernel for CUDA compute capability ``arch``
    without a GPU, with the ptxas that Triton ships; returns Triton's compiled kernel (``.asm`` holds
    ``ttgir``, ``ptx``, ``cubin``...). Catches errors the interpreter does not see (typing, lowering)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if triton_interprets():
        raise RuntimeError("compile_offline needs Triton imported without TRITON_INTERPRET (use a fresh process)")
    k = _build()
    if kernel == "reduce":
        sig = dict(
            ws_ptr="*fp32", y_ptr="*fp32", total="i32", n_splits="i32", BLOCK="constexpr", ACCUMULATE="constexpr"
        )
        src = ASTSource(fn=k._reduce_kernel, signature=sig, constexprs=dict(BLOCK=REDUCE_BLOCK, ACCUMULATE=accumulate))
        num_warps = 4
    else:
        log_w = hashing.log2_width(width)
        elem_size = torch.empty((), dtype=dtype).element_size()
        block = default_block(1 << log_w, elem_size) if block is None else min(1 << log_w, block)
        num_warps = default_warps(block) if num_warps is None else num_warps
        sig = dict(
            x_ptr="*" + _TL_TYPES[dtype],
            y_ptr="*fp32",
            D="i32",
            stride_x="i32",
            n_rows="i32",
            n_splits="i32",
            chunks_per_split="i32",
            n_chunks="i32",
            c_first="i64",
            lead="i32",
            k0="i64",
            k1="i64",
            k2="i64",
            k3="i64",
            W="constexpr",
            BLOCK="constexpr",
            MASKED="constexpr",
            DIRECT="constexpr",
            ACCUMULATE="constexpr",
        )
        constexprs = dict(W=1 << log_w, BLOCK=block, MASKED=masked, DIRECT=direct, ACCUMULATE=accumulate)
        src = ASTSource(fn=k._sketch_kernel, signature=sig, constexprs=constexprs)
    with _interpret_env(False):
        return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps))


# --------------------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------------------


def default_block(width: int, elem_size: int) -> int:
    return min(width, BLOCK_BY_ELEM_SIZE.get(elem_size, 1024))


def default_warps(block: int) -> int:
    return max(1, min(4, block // 256))


@dataclass(frozen=True)
class Plan:
    block: int  # buckets per program
    num_warps: int
    splits: int  # chunk ranges per row (1: programs write the output directly)
    chunks_per_split: int
    n_chunks: int  # global chunks overlapping [offset, offset + D)
    c_first: int  # global index of the first of them
    lead: int  # offset - c_first * width: coordinates of the first chunk before the row starts
    masked: bool  # some chunk is partial


def plan(
    dim: int,
    width: int,
    offset: int,
    elem_size: int,
    *,
    block: int | None = None,
    num_warps: int | None = None,
    target_programs: int = TARGET_PROGRAMS,
    max_workspace_fraction: float = MAX_WORKSPACE_FRACTION,
    splits: int | None = None,
) -> Plan:
    """Launch configuration for one row of ``dim`` values; a pure function of its arguments (the defaults
    of the keyword arguments are what :func:`count_sketch_triton` uses; the others are for tuning)."""
    log_w = hashing.log2_width(width)
    c_first = offset >> log_w
    lead = offset - (c_first << log_w)
    n_chunks = ((offset + dim - 1) >> log_w) - c_first + 1
    block = default_block(width, elem_size) if block is None else min(width, block)
    num_warps = default_warps(block) if num_warps is None else num_warps
    n_blocks = width // block
    # Workspace traffic (fp32 partials, written then read) per row is 8 * splits * width bytes, against about
    # n_chunks * width * elem_size bytes of input read.
    cap = max(1, int(n_chunks * elem_size * max_workspace_fraction / 8))
    if splits is None:
        splits = min(-(-target_programs // n_blocks), cap)
    splits = max(1, min(splits, n_chunks))
    chunks_per_split = -(-n_chunks // splits)
    splits = -(-n_chunks // chunks_per_split)
    masked = lead != 0 or (offset + dim) % width != 0
    return Plan(block, num_warps, splits, chunks_per_split, n_chunks, c_first, lead, masked)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _check_runnable(t: torch.Tensor) -> None:
    if triton is None:
        _build()  # raises: Triton is not installed
    if t.is_cuda and not triton_interprets():
        return
    if not interpret_enabled():
        raise RuntimeError(
            "the Triton count-sketch kernel needs a CUDA tensor, or TRITON_INTERPRET=1 in the environment to "
            "run it on CPU (slow; for tests); congrad.kernels.count_sketch picks the torch reference on CPU by itself"
        )
    if not triton_interprets():
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after Triton was imported, so Triton cannot interpret kernels in this "
            "process: set it before anything imports triton (e.g. at the top of conftest.py)"
        )


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else _NullContext()


class _NullContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def count_sketch_triton(
    x: torch.Tensor, width: int, seed: int, *, offset: int = 0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Count sketch of ``x`` with the Triton kernel (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).

    Same contract as :func:`congrad.kernels.count_sketch`.
    """
    return _count_sketch_triton(x, width, seed, offset=offset, out=out)


def _count_sketch_triton(
    x,
    width,
    seed,
    *,
    offset=0,
    out=None,
    block=None,
    num_warps=None,
    target_programs=TARGET_PROGRAMS,
    max_workspace_fraction=MAX_WORKSPACE_FRACTION,
    splits=None,
):
    """:func:`count_sketch_triton` with the launch configuration's knobs exposed (tests, tuning)."""
    a = check_args(x, width, seed, offset, out)
    _check_runnable(x)
    k = _build()
    x2 = a.x2 if a.x2.stride(-1) == 1 else a.x2.contiguous()
    n, d, w = a.rows, a.dim, a.width
    pl = plan(
        d,
        w,
        a.offset,
        x2.element_size(),
        block=block,
        num_warps=num_warps,
        target_programs=target_programs,
        max_workspace_fraction=max_workspace_fraction,
        splits=splits,
    )
    n_programs = n * pl.splits * (w // pl.block)
    if n_programs >= 2**31:
        raise ValueError(f"too many rows for one launch ({n} rows); sketch them in smaller batches")
    accumulate = a.out is not None
    if accumulate and a.out.is_contiguous():
        y = a.out
    else:
        y = torch.empty((n, w), dtype=torch.float32, device=x.device)
        if accumulate:
            y.copy_(a.out.view(n, w))
    direct = pl.splits == 1
    target = y if direct else torch.empty((pl.splits, n, w), dtype=torch.float32, device=x.device)
    keys = [key | _KEY_TAG for key in a.keys]
    with _device_guard(x):
        k._sketch_kernel[(n_programs,)](
            x2,
            target,
            d,
            x2.stride(0),
            n,
            pl.splits,
            pl.chunks_per_split,
            pl.n_chunks,
            pl.c_first,
            pl.lead,
            *keys,
            W=w,
            BLOCK=pl.block,
            MASKED=pl.masked,
            DIRECT=direct,
            ACCUMULATE=accumulate,
            num_warps=pl.num_warps,
        )
        if not direct:
            total = n * w
            k._reduce_kernel[(triton.cdiv(total, REDUCE_BLOCK),)](
                target,
                y,
                total,
                pl.splits,
                BLOCK=REDUCE_BLOCK,
                ACCUMULATE=accumulate,
                num_warps=4,
            )
    if accumulate:
        if y is not a.out:
            a.out.copy_(y.view_as(a.out))
        return a.out
    return y[0] if a.squeeze else y


def bucket_and_sign_triton(coords: torch.Tensor, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`congrad.kernels.bucket_and_sign` evaluated by the jitted hash functions (for tests): buckets (int64)
    and signs (float32 ±1) of the global coordinates ``coords`` (an integer tensor)."""
    if not isinstance(coords, torch.Tensor) or coords.dtype.is_floating_point or coords.dtype == torch.bool:
        raise TypeError("coords must be an integer tensor")
    _check_runnable(coords)
    k = _build()
    log_w = hashing.log2_width(width)
    keys = [key | _KEY_TAG for key in hashing.seed_keys(seed)]
    g = coords.reshape(-1).to(torch.int64).contiguous()
    buckets = torch.empty_like(g)
    sign_bits = torch.empty_like(g)
    n = g.numel()
    if n:
        block = 1024
        with _device_guard(g):
            k._probe_kernel[(triton.cdiv(n, block),)](
                g, buckets, sign_bits, n, *keys, W=1 << log_w, LOG_W=log_w, BLOCK=block
            )
    signs = torch.where(sign_bits != 0, -1.0, 1.0).to(torch.float32)
    return buckets.view(coords.shape), signs.view(coords.shape)


def launch_summary(dim: int, width: int, offset: int = 0, dtype: torch.dtype = torch.float32, rows: int = 1) -> str:
    """One line describing the launch :func:`count_sketch_triton` makes (for benchmarks)."""
    pl = plan(dim, width, offset, torch.empty((), dtype=dtype).element_size())
    programs = rows * pl.splits * (width // pl.block)
    return (
        f"BLOCK={pl.block} num_warps={pl.num_warps} splits={pl.splits} chunks/split={pl.chunks_per_split} "
        f"programs={programs}"
    )


__all__ = ["count_sketch_triton", "bucket_and_sign_triton", "plan", "interpret_enabled", "launch_summary"]
