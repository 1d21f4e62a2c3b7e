"""Test-session environment: no network, offline W&B, Triton kernels interpreted on CPU-only machines.

Set at import time, before anything imports triton, wandb or the Hugging Face hub client.
"""

import os
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# a small evaluation after training (where the evaluation itself is not what a test checks)
SMALL_EVAL = [
    "eval.pairs.per_language=2",
    "eval.win_rate.per_language=1",
    "eval.win_rate.generation.max_new_tokens=6",
    "eval.nll.per_language=1",
    "eval.harness.limit=1",
    "eval.win_rate.bootstrap=100",
]

# Under pytest-xdist (the README runs `-n 2`) every worker, and each process it starts, computes on one
# thread: two workers on two cores, rather than four threads contending for them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(items):
    """The end-to-end modules (``pytest.mark.slow(seconds=...)``, about what one takes on 2 cores) run first,
    longest first: with ``-n 2 --dist loadfile`` the two workers then finish at about the same time."""

    def cost(item):
        marker = item.get_closest_marker("slow")
        return -marker.kwargs.get("seconds", 1) if marker else 0

    items.sort(key=cost)  # stable: the order within a module stays


@pytest.fixture
def compose_config(tmp_path):
    """:func:`congrad.utils.project.compose_config` with the run dir in tmp_path; resolved unless asked not to
    (unresolved, interpolations follow later changes, e.g. ``paths.output_dir`` per iteration)."""
    from omegaconf import OmegaConf

    from congrad.utils.project import compose_config

    def compose(config_name: str = "train", overrides=(), output_dir=tmp_path, resolve: bool = True):
        cfg = compose_config(config_name, overrides, output_dir=output_dir)
        if resolve:
            OmegaConf.resolve(cfg)
        return cfg

    return compose


def wandb_exit_codes(directory, wait_s: float = 15.0) -> dict[str, int | None]:
    """``{offline run folder: exit code}`` of every offline W&B run below ``directory``, read from the run's
    ``.wandb`` file (a LevelDB-style log of protobuf records: 32 KiB blocks, each record a 7-byte header —
    CRC, length, type: full / first / middle / last — and its bytes). None: no exit record within ``wait_s``,
    the run was never finished (the dashboard would show it "running"; ``wandb sync`` uploads an incomplete run)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    def records(data: bytes):
        assert data[:4] == b":W&B", "not a W&B run file"
        pos, pending = 7, b""
        while pos + 7 <= len(data):
            room = 32768 - pos % 32768
            if room < 7:  # the rest of a block too short for a header is padding
                pos += room
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if kind == 0:
                pos += room
                continue
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind == 1:
                yield chunk
            elif kind == 2:
                pending = chunk
            elif kind == 3:
                pending += chunk
            else:
                yield pending + chunk

    def read() -> dict[str, int | None]:
        codes = {}
        for path in sorted(Path(directory).rglob("offline-run-*/run-*.wandb")):
            codes[path.parent.name] = None
            for chunk in records(path.read_bytes()):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(chunk)
                if record.WhichOneof("record_type") == "exit":
                    codes[path.parent.name] = record.exit.exit_code
        return codes

    # W&B's service process writes the file after wandb.finish() returns in the run's process: a run finished in
    # this process gets a few seconds for its exit record to reach the disk
    deadline = time.monotonic() + wait_s
    codes = read()
    while None in codes.values() and time.monotonic() < deadline:
        time.sleep(0.2)
        codes = read()
    return codes


def _mount_tmpfs(where: Path, options: str) -> None:
    """A tmpfs at ``where`` (root only: the honest way to get a full or read-only file system in a test)."""
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _unmount(where: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """``small_fs(size_kib)``: the path of a fresh tmpfs of that size (unmounted after the test)."""
    mounts = []

    def make(size_kib: int, name: str = "fs") -> Path:
        where = tmp_path / name
        _mount_tmpfs(where, f"size={size_kib}k,mode=0755")
        mounts.append(where)
        return where

    yield make
    for where in mounts:
        _unmount(where)


def fill(where: Path) -> None:
    """Write into ``where`` until its file system is full (ENOSPC)."""
    import errno

    with open(where / "filler", "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nothing can be written into: a read-only tmpfs as root (who ignores modes), else mode 0500."""
    where = tmp_path / "read-only"
    if os.geteuid() == 0:
        _mount_tmpfs(where, "size=64k,ro")
        yield where
        _unmount(where)
    else:
        where.mkdir(mode=0o500)
        yield where
        where.chmod(0o700)
