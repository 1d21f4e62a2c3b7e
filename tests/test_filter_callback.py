"""The ConGrad callback inside a real Trainer: it prunes before every epoch, the datamodule serves exactly
the kept pairs, the same seed gives the same kept sets, and a resumed run continues with the filter state
of its checkpoint."""

from collections import defaultdict

import hydra
import pytest
import pytorch_lightning as pl

from congrad.data.sources import read_json_lines
from congrad.data.synthetic import make_preference_rows
from congrad.filtering.callback import ConGradCallback
from congrad.training import build_pieces
from congrad.utils.instantiate import instantiate_group
from congrad.utils.io import write_jsonl

pytestmark = pytest.mark.slow(seconds=180)

LANGUAGES = ["en", "de", "ru", "zh", "hi", "ar"]
FILTER_FILES = ["conflict.png", "kept.jsonl", "scores.jsonl", "summary.json"]


class ServedPairs(pl.Callback):
    """Per epoch: the kept set the filter chose, and every pair index the train loader served. Stops the run
    (like a kill after the checkpoint was written) once ``interrupt_after_epoch`` has ended."""

    def __init__(self, interrupt_after_epoch=None):
        self.kept, self.served = {}, defaultdict(list)
        self.interrupt_after_epoch = interrupt_after_epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.interrupt_after_epoch:
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer, pl_module):
        congrad = next(cb for cb in trainer.callbacks if isinstance(cb, ConGradCallback))
        self.kept[trainer.current_epoch] = list(congrad.kept_indices)
        assert list(trainer.datamodule.active_indices) == self.kept[trainer.current_epoch]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.served[trainer.current_epoch] += batch["index"].tolist()


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(LANGUAGES, pairs_per_language=10, seed=3))
    return path


def fit(cfg, max_epochs, ckpt_path=None, interrupt_after_epoch=None):
    pl.seed_everything(cfg.seed)
    pieces = build_pieces(cfg)
    recorder = ServedPairs(interrupt_after_epoch)
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        callbacks=instantiate_group(cfg.callbacks) + [recorder],
    )
    trainer.fit(pieces.module, datamodule=pieces.datamodule, ckpt_path=ckpt_path)
    return recorder, pieces.datamodule


def test_prunes_every_epoch_serves_the_kept_set_and_resumes_with_the_same_state(compose_config, pairs_file, tmp_path):
    overrides = [
        f"data.path={pairs_file}",
        "data.batch_size=8",
        "sketch.width=1024",
        "filter.keep_ratio=0.75",
        "filter.min_per_language=2",
        "callbacks.congrad.progress=false",
    ]
    cfg = compose_config("train", overrides, output_dir=tmp_path / "uninterrupted")
    full, datamodule = fit(cfg, max_epochs=3)
    n = len(datamodule.train_rows)
    for epoch in range(3):
        kept = full.kept[epoch]
        assert sorted(full.served[epoch]) == kept, "each kept pair served exactly once, nothing else"
        assert len(kept) >= -(-3 * n // 4) and len(kept) < n
        per_language = defaultdict(int)
        for i in kept:
            per_language[datamodule.train_rows[i].language] += 1
        assert set(per_language) == set(LANGUAGES) and min(per_language.values()) >= 2
    assert full.kept[0] != full.kept[1] or full.kept[1] != full.kept[2], "the policy changes, so does the kept set"
    # every pass keeps its files in filter/epoch_<e>/; filter/<file> is the latest
    history = tmp_path / "uninterrupted" / "filter"
    assert sorted(p.name for p in history.glob("epoch_*")) == ["epoch_0", "epoch_1", "epoch_2"]
    for epoch in range(3):
        assert sorted(p.name for p in (history / f"epoch_{epoch}").iterdir()) == FILTER_FILES
        kept_ids = [row["id"] for _, row in read_json_lines(history / f"epoch_{epoch}" / "kept.jsonl")]
        assert kept_ids == [datamodule.train_rows[i].id for i in full.kept[epoch]]
    assert (history / "kept.jsonl").read_bytes() == (history / "epoch_2" / "kept.jsonl").read_bytes()

    # Same seed, fresh process state: the same kept sets. Interrupted after epoch 1 (its checkpoint carries the
    # kept set scored for epoch 2), then resumed from that checkpoint.
    cfg = compose_config("train", overrides, output_dir=tmp_path / "interrupted")
    first, _ = fit(cfg, max_epochs=3, interrupt_after_epoch=1)
    assert first.kept == {e: full.kept[e] for e in range(2)}
    history = tmp_path / "interrupted" / "filter"
    written = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in history.glob("epoch_*/*")}
    assert sorted({path.parent.name for path in written}) == ["epoch_0", "epoch_1", "epoch_2"]  # 2: scored at 1's end
    resumed, _ = fit(cfg, max_epochs=3, ckpt_path=tmp_path / "interrupted" / "checkpoints" / "last.ckpt")
    assert list(resumed.kept) == [2]
    assert resumed.kept[2] == full.kept[2]
    assert resumed.served[2] == full.served[2], "same pairs in the same order as without the interruption"

    # A run that ended at its last epoch holds no kept set for the next one: extended, it scores once first.
    extended, _ = fit(cfg, max_epochs=4, ckpt_path=tmp_path / "interrupted" / "checkpoints" / "last.ckpt")
    assert list(extended.kept) == [3] and sorted(extended.served[3]) == extended.kept[3]
    # the resumed runs continued the numbering and rewrote nothing of the passes before them
    assert sorted(p.name for p in history.glob("epoch_*")) == ["epoch_0", "epoch_1", "epoch_2", "epoch_3"]
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in written} == written
    assert (history / "kept.jsonl").read_bytes() == (history / "epoch_3" / "kept.jsonl").read_bytes()

    # the files of the latest pass
    for name in ("scores.jsonl", "kept.jsonl", "summary.json", "conflict.png"):
        assert (tmp_path / "interrupted" / "filter" / name).is_file()


@pytest.fixture(scope="module")
def shared_pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(LANGUAGES, pairs_per_language=10, seed=3))
    return path


def train_subprocess(run_dir, pairs, *extra):
    """``python train.py`` (one epoch unless overridden) in a subprocess; the scores of its latest pass."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    args = [
        sys.executable,
        str(ROOT / "train.py"),
        f"data.path={pairs}",
        "trainer.max_epochs=1",
        "sketch.width=1024",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "~eval",
        "callbacks.congrad.progress=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    # a rank that dies of a signal prints every thread's Python stack, so a crash says where it happened
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-6000:]
    return [row for _, row in read_json_lines(run_dir / "filter" / "scores.jsonl")]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, shared_pairs):
    """(run dir, scores of the first pass) of a one-process run: what every multi-process strategy must
    reproduce."""
    run_dir = tmp_path_factory.mktemp("single")
    return run_dir, train_subprocess(run_dir, shared_pairs)


def last_num_tokens(run_dir) -> float:
    import csv

    with open(run_dir / "metrics.csv") as f:
        return [float(r["train/num_tokens"]) for r in csv.DictReader(f) if r.get("train/num_tokens")][-1]


def test_ddp_ranks_share_the_scoring_and_keep_what_one_process_keeps(
    tmp_path, shared_pairs, single_process, compose_config
):
    """Two CPU processes (gloo) each sketch every other candidate and all-gather: the scores and the kept
    set of the first pass equal a single process's. The per-step metrics cover both ranks' batches: the
    token count of the epoch is that of all kept pairs (one pair more at most, which the distributed
    sampler may repeat to give both ranks as many), not one rank's half."""
    single_dir, single = single_process
    ddp = train_subprocess(tmp_path / "ddp", shared_pairs, "trainer.devices=2", "trainer.strategy=ddp")
    assert [s["kept"] for s in ddp] == [s["kept"] for s in single]
    assert [s["score"] for s in ddp] == pytest.approx([s["score"] for s in single], abs=1e-5)

    cfg = compose_config("train", [f"data.path={shared_pairs}"])
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=hydra.utils.instantiate(cfg.model.tokenizer))
    datamodule.setup()
    tokens = {
        row.id: 2 * len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"])
        for row, f in zip(datamodule.train_rows, datamodule._train_features)
    }
    kept_tokens = sum(tokens[s["id"]] for s in single if s["kept"])
    assert last_num_tokens(single_dir) == kept_tokens
    assert kept_tokens <= last_num_tokens(tmp_path / "ddp") <= kept_tokens + max(tokens.values())


def test_fsdp_scores_like_one_process_and_its_checkpoint_resumes_on_one_process(
    tmp_path, shared_pairs, single_process, compose_config
):
    """trainer=fsdp on two CPU processes (gloo; FSDP2 shards weights, adapters and optimizer state): the
    first pass keeps what one process keeps. Its checkpoint is the full state, optimizer state keyed as one
    process keys it, and a one-process run resumes from it (2 -> 1 processes): the pass it runs first scores
    with exactly the checkpoint's weights and filter state."""
    import torch

    from congrad.filtering.method import ConGrad
    from congrad.filtering.sketch_pass import sketch_candidates
    from congrad.filtering.sketching import PerPairSketcher

    fsdp = train_subprocess(
        tmp_path / "fsdp",
        shared_pairs,
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.devices=2",
    )
    _, single = single_process
    assert [s["kept"] for s in fsdp] == [s["kept"] for s in single]
    assert [s["score"] for s in fsdp] == pytest.approx([s["score"] for s in single], abs=1e-5)

    ckpt = tmp_path / "fsdp" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = compose_config("train", [f"data.path={shared_pairs}", "sketch.width=1024"], output_dir=tmp_path / "x")
    pieces = build_pieces(cfg)
    module = pieces.module
    trainable = [(f"policy.{n}", p) for n, p in module.policy.named_parameters() if p.requires_grad]
    assert sorted(checkpoint["state_dict"]) == sorted(n for n, _ in trainable)
    moments = checkpoint["optimizer_states"][0]["state"]
    assert sorted(moments) == list(range(len(trainable)))
    for i, (name, param) in enumerate(trainable):  # position i: the optimizer's i-th parameter, in full
        assert moments[i]["exp_avg"].shape == param.shape == checkpoint["state_dict"][name].shape, name

    overrides = [f"data.path={shared_pairs}", "sketch.width=1024", "callbacks.congrad.progress=false"]
    fit(compose_config("train", overrides, output_dir=tmp_path / "resumed"), max_epochs=2, ckpt_path=ckpt)
    resumed = [row for _, row in read_json_lines(tmp_path / "resumed" / "filter" / "scores.jsonl")]
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    rows = pieces.datamodule.train_rows
    sketcher = PerPairSketcher.from_config(module, cfg.sketch)
    sketches = sketch_candidates(
        sketcher, pieces.datamodule.candidate_dataloader(cfg.sketch.batch_size), "cpu", progress=False
    )
    congrad = ConGrad(**cfg.filter)
    congrad.load_state_dict(checkpoint["callbacks"]["ConGradCallback"]["filter"])  # passes seed the surgery order
    expected = congrad.step(sketches, [r.language for r in rows])
    assert [s["kept"] for s in resumed] == expected.kept.tolist()
    assert [s["score"] for s in resumed] == pytest.approx(expected.scores.tolist(), abs=1e-5)


def test_with_every_n_epochs_the_latest_kept_set_serves_between_passes_and_across_a_resume(
    compose_config, pairs_file, tmp_path
):
    """every_n_epochs=2 over 3 epochs: passes before epochs 0 and 2 only, epoch 1 trains on epoch 0's kept set;
    interrupted after epoch 0 (no pass is due at its end) and resumed, the run serves and keeps the same."""
    overrides = [
        f"data.path={pairs_file}",
        "data.batch_size=8",
        "sketch.width=1024",
        "filter.keep_ratio=0.75",
        "callbacks.congrad.progress=false",
        "callbacks.congrad.every_n_epochs=2",
    ]
    full, datamodule = fit(compose_config("train", overrides, output_dir=tmp_path / "whole"), max_epochs=3)
    assert full.kept[1] == full.kept[0] and sorted(full.served[1]) == full.kept[0]
    assert len(full.kept[0]) < len(datamodule.train_rows) and sorted(full.served[2]) == full.kept[2]
    assert sorted(p.name for p in (tmp_path / "whole" / "filter").glob("epoch_*")) == ["epoch_0", "epoch_2"]

    cfg = compose_config("train", overrides, output_dir=tmp_path / "interrupted")
    first, _ = fit(cfg, max_epochs=3, interrupt_after_epoch=0)
    resumed, _ = fit(cfg, max_epochs=3, ckpt_path=tmp_path / "interrupted" / "checkpoints" / "last.ckpt")
    assert first.kept == {0: full.kept[0]} and resumed.kept == {1: full.kept[0], 2: full.kept[2]}
    assert resumed.served == {e: full.served[e] for e in (1, 2)}, "same pairs in the same order"
    assert sorted(p.name for p in (tmp_path / "interrupted" / "filter").glob("epoch_*")) == ["epoch_0", "epoch_2"]

    # every_n_epochs changed on resume: a kept set older than the latest pass due under the new setting is
    # rescored, not served (n=4 kept epoch 0's set through epoch 2; with n=2 a pass was due at epoch 2)
    changed = [o for o in overrides if "every_n_epochs" not in o]
    cfg = compose_config("train", [*changed, "callbacks.congrad.every_n_epochs=4"], output_dir=tmp_path / "changed")
    first, _ = fit(cfg, max_epochs=4, interrupt_after_epoch=2)
    assert list(first.kept) == [0, 1, 2] and first.kept[2] == first.kept[0]
    cfg = compose_config("train", [*changed, "callbacks.congrad.every_n_epochs=2"], output_dir=tmp_path / "changed")
    resumed, _ = fit(cfg, max_epochs=4, ckpt_path=tmp_path / "changed" / "checkpoints" / "last.ckpt")
    assert list(resumed.kept) == [3] and sorted(resumed.served[3]) == resumed.kept[3]
    assert sorted(p.name for p in (tmp_path / "changed" / "filter").glob("epoch_*")) == ["epoch_0", "epoch_3"]
