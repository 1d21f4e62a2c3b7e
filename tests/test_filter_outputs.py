"""filter.py's files are one set: a run killed at any moment (SIGKILL) leaves the complete previous set or
the complete new one, stale temporaries are removed by the next run, and a second filter.py writing the
same output_dir is refused. An output_dir that cannot be one is a clear error before anything loads."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

from congrad.data.formats import load_preference_rows
from congrad.data.synthetic import make_preference_rows
from congrad.errors import CongradError
from congrad.filtering.method import PassResult
from congrad.filtering.outputs import write_filter_outputs
from congrad.filtering.standalone import filter_file
from congrad.utils.fileset import current_set, locked_directory, prepare_output_dir, write_file_set
from congrad.utils.io import write_jsonl

pytestmark = pytest.mark.slow(seconds=22)

NAMES = ("scores.jsonl", "kept.jsonl", "summary.json", "conflict.png")


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de", "fr"], pairs_per_language=4, seed=4))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def assert_one_consistent_set(out):
    """All four files, and they agree: kept.jsonl holds exactly the kept rows of scores.jsonl, the summary
    counts them. Returns the summary."""
    assert all((out / name).is_file() for name in NAMES), sorted(p.name for p in out.iterdir())
    scores, kept, summary = (
        read_jsonl(out / "scores.jsonl"),
        read_jsonl(out / "kept.jsonl"),
        json.loads((out / "summary.json").read_text()),
    )
    assert [row["id"] for row in kept] == [line["id"] for line in scores if line["kept"]]
    assert summary["kept"] == len(kept) and summary["total"] == len(scores)
    return summary


def old_set(out, pairs_file):
    """A set written in-process: every pair kept, marked as the old one."""
    rows, report = load_preference_rows(pairs_file)
    n, languages = len(rows), [row.language for row in rows]
    result = PassResult(
        scores=torch.ones(n),
        kept=torch.ones(n, dtype=torch.bool),
        languages=languages,
        aggregate_languages=sorted(set(languages)),
        cosine_before=torch.eye(3),
        cosine_after=torch.eye(3),
        drop_reason="below keep_ratio cut",
    )
    write_filter_outputs(out, rows, result, report, extra_summary={"which": "old"})


def test_the_set_is_replaced_as_one_and_plain_files_of_earlier_versions_carry_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.txt", "b.txt"):
        (out / name).write_text("earlier version")
    (out / ".a.txt.1234.tmp").write_text("a temporary of a run that was killed")

    def failing(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_file_set(out, {"a.txt": lambda p: p.write_text("new"), "b.txt": failing})
    assert [(out / n).read_text() for n in ("a.txt", "b.txt")] == ["earlier version"] * 2
    write_file_set(out, {"a.txt": lambda p: p.write_text("new a"), "b.txt": lambda p: p.write_text("new b")})
    assert [(out / n).read_text() for n in ("a.txt", "b.txt")] == ["new a", "new b"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".set", current_set(out).name]


def test_a_filter_py_killed_while_writing_leaves_a_complete_set(pairs_file, tmp_path):
    """SIGKILL a real filter.py the moment it starts writing (its temporary folder appears): the directory
    still holds one complete, consistent set; the next write removes what the killed run left."""
    out = tmp_path / "out"
    old_set(out, pairs_file)
    assert assert_one_consistent_set(out)["which"] == "old"
    args = [
        sys.executable,
        str(ROOT / "filter.py"),
        f"data.path={pairs_file}",
        f"output_dir={out}",
        "sketch.width=1024",
        "filter.keep_ratio=0.5",
        f"hydra.run.dir={tmp_path / 'logs'}",
    ]
    killed_while_writing = False
    for _ in range(3):  # the write takes a few hundred ms: polling every ms catches it, else try again
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while process.poll() is None and time.time() < deadline:
            if any(p.name.endswith(".tmp") for p in out.iterdir()):
                process.send_signal(signal.SIGKILL)
                killed_while_writing = process.wait() == -signal.SIGKILL
                break
            time.sleep(0.001)
        if process.poll() is None:
            process.kill()
        assert process.wait() in (0, -signal.SIGKILL), process.stderr.read().decode()[-3000:]
        summary = assert_one_consistent_set(out)
        assert summary.get("which") == "old" or summary["settings"]["keep_ratio"] == 0.5
        if killed_while_writing:
            break
    assert killed_while_writing
    assert any(p.name.endswith(".tmp") for p in out.iterdir()), "the killed run left its temporary folder"
    old_set(out, pairs_file)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len([p for p in out.iterdir() if p.name.startswith(".set-")]) == 1


def test_a_second_filter_py_on_the_same_output_dir_is_refused(compose_config, pairs_file, tmp_path):
    out = tmp_path / "out"
    cfg = compose_config("filter", [f"data.path={pairs_file}", f"output_dir={out}"])
    with locked_directory(prepare_output_dir(out), "the first run"):  # what a running filter.py holds
        with pytest.raises(CongradError) as raised:
            filter_file(cfg)
    message = str(raised.value)
    assert message.startswith(f"output_dir={out} is in use by pid {os.getpid()} on ")
    assert "choose another directory" in message
    assert not (out / "scores.jsonl").exists()


@pytest.mark.parametrize("case", ["a file", "inside a file", "not writable"])
def test_an_output_dir_that_cannot_be_one_is_named(compose_config, pairs_file, tmp_path, case):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    expected = {
        "a file": "is a file: give a directory",
        "inside a file": f"is inside {blocker}, which is a file",
        "not writable": "is not writable (",
    }[case]
    out = {"a file": blocker, "inside a file": blocker / "out", "not writable": tmp_path / "read-only"}[case]
    if case == "not writable":
        out.mkdir(mode=0o500)
        if os.geteuid() == 0:  # root writes anywhere a mode allows nothing; /proc takes no new files
            out = "/proc/self"
    cfg = compose_config("filter", [f"data.path={pairs_file}", f"output_dir={out}"])
    with pytest.raises(CongradError) as raised:
        filter_file(cfg)
    assert str(raised.value).startswith(f"output_dir={out} {expected}")


def test_evaluate_py_names_an_output_dir_that_is_a_file_before_hydra_creates_it(tmp_path, capsys):
    """evaluate.py's run directory is its output_dir: the callback conf/evaluate.yaml registers stops the run
    with one line and exit 2 where Hydra would otherwise fail to create the directory."""
    import hydra
    from omegaconf import OmegaConf

    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    callbacks = OmegaConf.merge(
        OmegaConf.load(ROOT / "conf" / "hydra" / "default.yaml").callbacks,
        OmegaConf.load(ROOT / "conf" / "evaluate.yaml").hydra.callbacks,
    )
    check = hydra.utils.instantiate(callbacks.run_paths)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(blocker / "out")}}})
    with pytest.raises(SystemExit) as raised:
        check.on_run_start(config)
    assert raised.value.code == 2
    assert (
        capsys.readouterr().err == f"error: output_dir={blocker / 'out'} is inside {blocker}, which is a file: "
        "give a directory (it is created if missing)\n"
    )
    check.on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "new" / "out")}}}))
    assert (tmp_path / "new" / "out").is_dir()


def test_a_pair_that_truncation_leaves_without_a_preference_is_dropped_with_its_reason(compose_config, tmp_path):
    """Two rows whose answers differ only after data.max_length tokens are the same pair once truncated: no
    preference, a DPO gradient of rounding noise. The filter gives them no vote and no score, and
    scores.jsonl says why they were dropped."""
    from congrad.filtering.method import NO_SIGNAL

    shared = "Der Regenbogen entsteht, wenn Sonnenlicht in Wassertropfen gebrochen wird. " * 12
    same = [
        {
            "id": f"same-{i}",
            "prompt": "Wie entsteht ein Regenbogen?",
            "chosen": shared + "Ja.",
            "rejected": shared + "Nein.",
            "language": "de",
        }
        for i in range(2)
    ]
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de"], pairs_per_language=4, seed=4) + same)
    out = tmp_path / "out"
    filter_file(compose_config("filter", [f"data.path={path}", f"output_dir={out}", "sketch.width=1024"]))
    lines = {line["id"]: line for line in read_jsonl(out / "scores.jsonl")}
    for i in range(2):
        assert lines[f"same-{i}"] == {
            "id": f"same-{i}",
            "language": "de",
            "score": None,
            "kept": False,
            "reason": NO_SIGNAL,
        }
    assert all(line["score"] is not None for key, line in lines.items() if not key.startswith("same-"))
    assert json.loads((out / "summary.json").read_text())["languages"]["de"]["no_signal"] == 2


def test_a_full_disk_names_the_file_and_leaves_the_previous_set(pairs_file, small_fs):
    """Out of space while the new set is written: one line naming the file, the previous set complete."""
    from conftest import fill

    from congrad.utils.io import OutputError

    out = small_fs(512) / "out"
    old_set(out, pairs_file)
    fill(out.parent)
    rows, report = load_preference_rows(pairs_file)
    n, languages = len(rows), [row.language for row in rows]
    result = PassResult(
        scores=torch.zeros(n),
        kept=torch.zeros(n, dtype=torch.bool),
        languages=languages,
        aggregate_languages=sorted(set(languages)),
        cosine_before=torch.eye(3),
        cosine_after=torch.eye(3),
        drop_reason="below keep_ratio cut",
    )
    with pytest.raises(OutputError) as raised:
        write_filter_outputs(out, rows, result, report, extra_summary={"which": "new"})
    assert str(raised.value) == (
        f"cannot write {out / 'scores.jsonl'}: No space left on device; what was there before is unchanged"
    )
    assert assert_one_consistent_set(out)["which"] == "old"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_filter_py_into_a_full_output_dir_is_named_before_anything_loads(compose_config, pairs_file, small_fs):
    """Checked before the data and the model load (filter.py prints it as one line, exit 2); the previous
    set stays as it was."""
    from conftest import fill

    out = small_fs(512) / "out"
    old_set(out, pairs_file)
    before = {name: (out / name).read_bytes() for name in NAMES}
    fill(out.parent)
    with pytest.raises(CongradError) as raised:
        filter_file(compose_config("filter", [f"data.path={pairs_file}", f"output_dir={out}"]))
    assert str(raised.value) == f"output_dir={out} is not writable (No space left on device)"
    assert {name: (out / name).read_bytes() for name in NAMES} == before


def test_a_read_only_output_dir_is_named(compose_config, pairs_file, read_only_dir):
    cfg = compose_config("filter", [f"data.path={pairs_file}", f"output_dir={read_only_dir}"])
    with pytest.raises(CongradError) as raised:
        filter_file(cfg)
    assert str(raised.value).startswith(f"output_dir={read_only_dir} is not writable (")
