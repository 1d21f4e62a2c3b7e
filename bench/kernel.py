"""Count-sketch throughput: GB/s of input read by our kernel, by torch ``index_add_``, and by a plain read.

For every case it times, in the same run and on the same input,

* ``ours``       ``congrad.kernels.count_sketch(x, width, seed)`` — the Triton kernel on a GPU; on CPU the torch
                 reference (the path ``count_sketch`` takes there; the header says so), whose hash cache is
                 warm after the first call, as in a sketch pass that sketches the same parameters every batch;
* ``cold``       (CPU only) the same with the reference's hash cache emptied before every call: the hash
                 computed from scratch;
* ``index_add_`` a torch count sketch with precomputed buckets and signs
                 (``out.index_add_(1, buckets, x * signs)``; the hash tables are built before timing);
* ``read``       ``x.sum()``, a plain read of the input — the bandwidth ceiling;

and prints GB/s of input read (N·D·bytes per element / time) with the ratios ours/read and
ours/index_add_.

Usage (from the repository root)::

    python bench/kernel.py             # GPU: the full grid below; CPU: the quick grid
    python bench/kernel.py --quick     # quick grid: D in {2^16, 2^18, 2^20}, batched [16, 2^18]
    python bench/kernel.py --full      # full grid even on CPU (slow, needs several GB of memory)
    python bench/kernel.py --check     # GPU: also check the goals at D=2^27; exit 1 if one is missed
    python bench/kernel.py --sweep     # GPU: also time other launch configurations at D=2^27
    python bench/kernel.py --json F    # also write every figure to F (JSON)
    python bench/kernel.py --threads N # torch CPU threads (on CPU the default is 1)

Full grid: fp32 with D in {2^20, 2^24, 2^27} x width in {2^12, 2^16, 2^20}; bf16 with D=2^27 at the same
widths; batched fp32 [N=16, D=2^24] at width 2^16. Inputs of 2^20 fp32 values (4 MB) fit in the GPU's L2
cache, so those rows measure cache rather than memory bandwidth (for all three columns alike).

Goals checked by ``--check`` (one H100/H200, D=2^27; all ratios against ``read`` of the same dtype in the
same run): fp32 at width 2^16 >= 90% of read and >= 10x index_add_; fp32 at width 2^20 >= 80%; bf16 at
width 2^16 >= 75%; batched [16, 2^24] fp32 at width 2^16 >= 80%.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time

import torch

from congrad import kernels  # noqa: E402
from congrad.kernels import reference, triton_kernel  # noqa: E402

SEED = 1234
GOALS = [  # (label, dtype, rows, D, width, min ours/read, min ours/index_add)
    ("fp32 D=2^27 w=2^16", torch.float32, 1, 1 << 27, 1 << 16, 0.90, 10.0),
    ("fp32 D=2^27 w=2^20", torch.float32, 1, 1 << 27, 1 << 20, 0.80, None),
    ("bf16 D=2^27 w=2^16", torch.bfloat16, 1, 1 << 27, 1 << 16, 0.75, None),
    ("fp32 [16, 2^24] w=2^16", torch.float32, 16, 1 << 24, 1 << 16, 0.80, None),
]


def grid(full: bool):
    """Cases (dtype, rows, D, width)."""
    if full:
        cases = [(torch.float32, 1, d, w) for d in (1 << 20, 1 << 24, 1 << 27) for w in (1 << 12, 1 << 16, 1 << 20)]
        cases += [(torch.bfloat16, 1, 1 << 27, w) for w in (1 << 12, 1 << 16, 1 << 20)]
        cases += [(torch.float32, 16, 1 << 24, 1 << 16)]
    else:
        cases = [(torch.float32, 1, d, w) for d in (1 << 16, 1 << 18, 1 << 20) for w in (1 << 12, 1 << 16, 1 << 20)]
        cases += [(torch.bfloat16, 1, 1 << 20, 1 << 16)]
        cases += [(torch.float32, 16, 1 << 18, 1 << 16)]
    return cases


class Timer:
    """Median seconds per call of ``fn``, after warm-up; CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, cuda: bool, budget_s: float):
        self.cuda, self.budget_s = cuda, budget_s

    def __call__(self, fn) -> float:
        fn()  # warm-up (compiles a kernel variant on first use)
        fn()
        first = self._one(fn)
        reps = int(min(50, max(3, self.budget_s / max(first, 1e-6))))
        return statistics.median(self._one(fn) for _ in range(reps))

    def _one(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t


def p2(v: int) -> str:
    return f"2^{v.bit_length() - 1}" if v & (v - 1) == 0 else str(v)


def dname(dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def make_input(dtype, rows, dim, device):
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (dim,) if rows == 1 else (rows, dim)
    return torch.randn(shape, device=device, generator=gen, dtype=torch.float32).to(dtype)


def measure_case(dtype, rows, dim, width, device, timer):
    x = make_input(dtype, rows, dim, device)
    nbytes = x.numel() * x.element_size()
    x2 = x.view(rows, dim)
    t_read = timer(lambda: x.sum())
    t_ours = timer(lambda: kernels.count_sketch(x, width, SEED))
    buckets, signs = kernels.bucket_and_sign(torch.arange(dim, device=device), width, SEED)
    out = torch.zeros(rows, width, device=device)

    def index_add():
        out.zero_()
        out.index_add_(1, buckets, x2 * signs)

    t_index = timer(index_add)
    t_cold = None
    if device == "cpu":

        def cold():
            reference.clear_hash_cache()
            kernels.count_sketch(x, width, SEED)

        t_cold = timer(cold)
        reference.clear_hash_cache()
    ours = kernels.count_sketch(x, width, SEED)  # the three agree (index_add_ is the reference's method)
    torch.testing.assert_close(out.view(ours.shape), ours, rtol=1e-3, atol=1e-3 * (dim / width + 1) ** 0.5)
    seconds = {"ours": t_ours, "index_add_": t_index, "read": t_read}
    if t_cold is not None:
        seconds["cold"] = t_cold
    gbs = {k: nbytes / t / 1e9 for k, t in seconds.items()}
    return {
        "dtype": dname(dtype),
        "rows": rows,
        "D": dim,
        "width": width,
        "bytes": nbytes,
        "seconds": seconds,
        "GB/s": gbs,
        "ours/read": gbs["ours"] / gbs["read"],
        "ours/index_add_": gbs["ours"] / gbs["index_add_"],
        "cold/index_add_": gbs["cold"] / gbs["index_add_"] if "cold" in gbs else None,
    }


def sweep(device, timer):
    """Other launch configurations of the Triton kernel at D=2^27 (tuning data for a later change of the
    defaults in kernels/triton_kernel.py); every configuration's result is checked against the default's."""
    rows_out = []
    for label, dtype, rows, dim, width, _, _ in GOALS:
        x = make_input(dtype, rows, dim, device)
        nbytes = x.numel() * x.element_size()
        t_read = timer(x.sum)
        default = kernels.count_sketch(x, width, SEED)
        for block in (1024, 2048, 4096):
            for num_warps in (4, 8):
                for target in (1024, 2048, 4096):
                    for fraction in (1 / 16, 1 / 8):
                        run = functools.partial(
                            triton_kernel._count_sketch_triton,
                            x,
                            width,
                            SEED,
                            block=block,
                            num_warps=num_warps,
                            target_programs=target,
                            max_workspace_fraction=fraction,
                        )

                        torch.testing.assert_close(run(), default, rtol=1e-4, atol=1e-3 * (dim / width) ** 0.5)
                        t = timer(run)
                        r = {
                            "case": label,
                            "block": block,
                            "num_warps": num_warps,
                            "target_programs": target,
                            "max_workspace_fraction": fraction,
                            "GB/s": nbytes / t / 1e9,
                            "of read": t_read / t,
                            "launch": triton_kernel.plan(
                                dim,
                                width,
                                0,
                                x.element_size(),
                                block=block,
                                num_warps=num_warps,
                                target_programs=target,
                                max_workspace_fraction=fraction,
                            ).__dict__,
                        }
                        rows_out.append(r)
                        print(
                            f"  {label:24s} BLOCK={block:5d} warps={num_warps} target={target:5d} "
                            f"ws<={fraction:.3f}  splits={r['launch']['splits']:4d}  {r['GB/s']:8.0f} GB/s  "
                            f"{100 * r['of read']:5.1f}% of read",
                            flush=True,
                        )
        del x, default
        best = max((r for r in rows_out if r["case"] == label), key=lambda r: r["GB/s"])
        print(
            f"  best for {label}: BLOCK={best['block']} warps={best['num_warps']} "
            f"target={best['target_programs']} ws<={best['max_workspace_fraction']:.3f} "
            f"{best['GB/s']:.0f} GB/s ({100 * best['of read']:.1f}% of read)"
        )
    return rows_out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (the default on CPU)")
    size.add_argument("--full", action="store_true", help="the full grid (the default on a GPU)")
    ap.add_argument("--check", action="store_true", help="check the GPU goals at D=2^27; exit 1 if one is missed")
    ap.add_argument("--sweep", action="store_true", help="also time other launch configurations (GPU)")
    ap.add_argument("--json", metavar="PATH", help="write all figures to PATH as JSON")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed repetitions per measurement")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default on CPU: 1, stable figures on a shared machine)",
    )
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if args.threads is not None or not cuda:
        torch.set_num_threads(args.threads or 1)
    full = args.full or (cuda and not args.quick)
    timer = Timer(cuda, args.budget if args.budget is not None else (0.25 if cuda else 0.5))
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    header = {
        "device": torch.cuda.get_device_name()
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "grid": "full" if full else "quick",
        "ours": "Triton kernel" if cuda else "torch reference (no CUDA device: the Triton kernel is not timed)",
    }
    for k, v in header.items():
        print(f"# {k}: {v}")

    results = []
    print(
        f"{'case':30s} {'ours':>9s} {'index_add_':>11s} {'read':>9s}   {'ours/read':>9s} {'ours/index_add_':>15s}"
        + ("   launch" if cuda else f" {'cold/index_add_':>15s}")
    )
    print(f"{'':30s} {'GB/s':>9s} {'GB/s':>11s} {'GB/s':>9s}")
    for dtype, rows, dim, width in grid(full):
        r = measure_case(dtype, rows, dim, width, device, timer)
        results.append(r)
        shape = f"[{rows}, {p2(dim)}]" if rows > 1 else f"D={p2(dim)}"
        label = f"{dname(dtype)} {shape} w={p2(width)}"
        g = r["GB/s"]
        launch = triton_kernel.launch_summary(dim, width, 0, dtype, rows) if cuda else ""
        print(
            f"{label:30s} {g['ours']:9.3g} {g['index_add_']:11.3g} {g['read']:9.4g}   "
            f"{100 * r['ours/read']:8.1f}% {r['ours/index_add_']:14.3g}x   "
            + (launch if cuda else f"{r['cold/index_add_']:14.3g}x"),
            flush=True,
        )
        if cuda:
            torch.cuda.empty_cache()

    status = 0
    goals = []
    if args.check:
        if not cuda:
            print("# --check: no CUDA device, the GPU goals are not checked")
        else:
            print("# goals (D=2^27 unless batched; ratios against read in the same run)")
            for label, dtype, rows, dim, width, min_read, min_index in GOALS:
                r = next(
                    (
                        r
                        for r in results
                        if (r["dtype"], r["rows"], r["D"], r["width"]) == (dname(dtype), rows, dim, width)
                    ),
                    None,
                )
                if r is None:
                    r = measure_case(dtype, rows, dim, width, device, timer)
                ok = r["ours/read"] >= min_read and (min_index is None or r["ours/index_add_"] >= min_index)
                need = f">= {100 * min_read:.0f}% of read" + (f", >= {min_index:.0f}x index_add_" if min_index else "")
                print(
                    f"{'PASS' if ok else 'FAIL'}  {label:24s} {100 * r['ours/read']:5.1f}% of read, "
                    f"{r['ours/index_add_']:5.1f}x index_add_   (goal {need})"
                )
                goals.append(
                    {"goal": label, "pass": ok, "ours/read": r["ours/read"], "ours/index_add_": r["ours/index_add_"]}
                )
                status |= 0 if ok else 1

    sweep_rows = []
    if args.sweep:
        if not cuda:
            print("# --sweep: no CUDA device, nothing to sweep")
        else:
            print("# launch-configuration sweep at D=2^27 (defaults: kernels/triton_kernel.py)")
            sweep_rows = sweep(device, timer)

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"header": header, "cases": results, "goals": goals, "sweep": sweep_rows}, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
