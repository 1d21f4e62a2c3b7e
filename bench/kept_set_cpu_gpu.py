"""Same seed, same kept set on CPU and GPU: run filter.py on the CPU and on ``--device`` and compare.

    python bench/kept_set_cpu_gpu.py --device cuda [filter.py overrides ...]

Prints the number of pairs, whether the kept sets are identical, and the largest score difference;
exits 1 when the kept sets differ.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from congrad.data.sources import read_json_lines

ROOT = Path(__file__).resolve().parents[1]


def scores(out_dir: Path, device: str, overrides: list[str]) -> list[dict]:
    subprocess.run(
        [sys.executable, str(ROOT / "filter.py"), f"output_dir={out_dir}", f"device={device}", *overrides],
        check=True,
        capture_output=True,
        text=True,
    )
    return [row for _, row in read_json_lines(out_dir / "scores.jsonl")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("overrides", nargs="*", help="filter.py overrides (default: the shipped tiny set)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cpu = scores(Path(tmp) / "cpu", "cpu", args.overrides)
        other = scores(Path(tmp) / args.device, args.device, args.overrides)
    same = [a["kept"] for a in cpu] == [b["kept"] for b in other]
    diff = max(abs(a["score"] - b["score"]) for a, b in zip(cpu, other) if a["score"] is not None)
    print(
        f"{len(cpu)} pairs; cpu vs {args.device}: kept sets {'identical' if same else 'DIFFER'}; "
        f"max |score difference| {diff:.2e}"
    )
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
