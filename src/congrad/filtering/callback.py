"""ConGrad inside training: before every epoch (or every ``every_n_epochs``-th: epochs 0, n, 2n, ...), score
all candidate pairs with the current policy and prune the datamodule to the kept ones; between passes the
latest kept set serves.

"Before epoch e+1" is the end of epoch e (same weights): Lightning rebuilds the train loader between
``on_train_epoch_end`` and the next ``on_train_epoch_start``, so the pruning is done there; the first
epoch's pruning happens in ``on_fit_start``. Checkpoints (written after this callback at epoch end) carry
the filter state — aggregates, pass count, kept set, scores, the epoch the kept set is for and the content
hash of the rows it indexes — and a resumed run continues from it without rescoring. (A run that stopped at
its last epoch has no kept set for the next one; resumed with more epochs, it scores once at the start, unless
no pass is due then and the latest kept set serves on. A
run resumed on other rows, which ``resume_rescore=true`` allows, scores them afresh; so does one resumed with an
``every_n_epochs`` under which a pass after the checkpoint's kept set was due.) Each pass's files stay
in ``<output_dir>/epoch_<e>/`` (the epoch the kept set is for), so a resumed run continues the numbering.

Under DDP, FSDP (``trainer=fsdp``) or any multi-process strategy each rank sketches every world_size-th
candidate and the sketches are all-gathered, so the pass costs 1/world_size per rank and every rank keeps
the same pairs. Every rank runs the same number of scoring batches (shares are padded to equal length),
as a sharded model's collective forward and backward require.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

import pytorch_lightning as pl
import torch
from pydantic import Field

from congrad.filtering.method import ConGrad, PassResult
from congrad.filtering.outputs import write_filter_outputs
from congrad.filtering.sketch_pass import sketch_candidates
from congrad.filtering.sketching import PerPairSketcher
from congrad.utils.schema import FreeForm, Instantiated, Text


class ConGradCallbackSettings(Instantiated):
    """``callbacks.congrad``: ``sketch`` and ``method`` are the ``sketch`` and ``filter`` groups, checked there."""

    group: ClassVar[str] = "callbacks.congrad"
    sketch: FreeForm
    method: FreeForm
    output_dir: Text
    progress: bool
    every_n_epochs: Annotated[int, Field(ge=1)]


class ConGradCallback(pl.Callback):
    """``sketch``: the ``sketch`` config group (width, seed, params, method, kind, chunk_mb, batch_size);
    ``method``: the ``filter`` config group, the keyword arguments of :class:`ConGrad` (aggregator,
    keep_ratio, threshold, per_language, min_per_language, ema, gradvac_target, normalize, seed);
    ``every_n_epochs``: a pass before epochs 0, n, 2n, ... (1: every epoch). Every pass writes its files into
    ``output_dir/epoch_<e>/``, never rewritten; ``output_dir/<file>`` is the latest pass's (a link into its
    folder)."""

    def __init__(self, sketch: dict, method: dict, output_dir: str, progress: bool = True, every_n_epochs: int = 1):
        ConGradCallbackSettings.check(every_n_epochs=every_n_epochs)
        self.every_n_epochs = every_n_epochs
        self.sketch = dict(sketch)
        self.congrad = ConGrad(**method)
        self.output_dir = Path(output_dir)
        self.progress = progress
        self.kept_indices: list[int] | None = None
        self.kept_for_epoch: int | None = None
        self.scores: torch.Tensor | None = None
        self.kept_data: str | None = None  # sha256 of the training rows the kept set indexes
        self._resume_epoch: int | None = None

    # ---- hooks -----------------------------------------------------------------------------------------
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Lightning restores its loops only after on_fit_start; the epoch to come is read here instead.
        self._resume_epoch = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = self._resume_epoch if self._resume_epoch is not None else trainer.current_epoch
        same_rows = self.kept_data == _rows_hash(trainer.datamodule)
        # the checkpoint's kept set is restored when the latest pass due by this epoch chose it (it serves until
        # the next pass); a set from an earlier pass (every_n_epochs changed on resume) or other rows is rescored
        latest_due = epoch - epoch % self.every_n_epochs
        serves = self.kept_for_epoch is not None and latest_due <= self.kept_for_epoch <= epoch
        if serves and same_rows:
            trainer.datamodule.set_active_indices(self.kept_indices)
        else:
            self._filter(trainer, pl_module, epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = _upcoming_epoch(trainer)
        if epoch < trainer.max_epochs and self._due(epoch):
            self._filter(trainer, pl_module, epoch)

    def state_dict(self) -> dict:
        return {
            "filter": self.congrad.state_dict(),
            "kept_indices": self.kept_indices,
            "kept_for_epoch": self.kept_for_epoch,
            "scores": self.scores,
            "kept_data": self.kept_data,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.congrad.load_state_dict(state_dict["filter"])
        self.kept_indices = state_dict["kept_indices"]
        self.kept_for_epoch = state_dict["kept_for_epoch"]
        self.scores = state_dict["scores"]
        self.kept_data = state_dict.get("kept_data")

    def _due(self, epoch: int) -> bool:
        return epoch % self.every_n_epochs == 0

    # ---- one pass ----------------------------------------------------------------------------------------
    def _filter(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        datamodule = trainer.datamodule
        sketcher = PerPairSketcher.from_config(pl_module, self.sketch)
        rows = datamodule.train_rows
        # each rank sketches every world_size-th candidate; the sketches are all-gathered, so every rank
        # folds the same [N, w] into the same filter state and keeps the same pairs
        share = list(range(trainer.global_rank, len(rows), trainer.world_size))
        loader = datamodule.candidate_dataloader(
            self.sketch.get("batch_size"), indices=_padded(share, len(rows), trainer.world_size)
        )
        sketches = sketch_candidates(
            sketcher, loader, pl_module.device, progress=self.progress and trainer.is_global_zero
        )[: len(share)]
        if trainer.world_size > 1:
            sketches = _gather_strided(trainer, sketches, len(rows))
        result = self.congrad.step(sketches, [row.language for row in rows])
        self.scores = result.scores
        self.kept_indices = result.kept.nonzero().flatten().tolist()
        self.kept_for_epoch = epoch
        self.kept_data = _rows_hash(datamodule)
        datamodule.set_active_indices(self.kept_indices)
        if trainer.is_global_zero:
            heatmap = write_filter_outputs(
                self.output_dir,
                rows,
                result,
                extra_summary={"epoch": epoch},
                keep_as=_history_name(self.output_dir, epoch),
            )
            self._log(trainer, result, rows, heatmap, epoch)

    def _log(self, trainer: pl.Trainer, result: PassResult, rows, heatmap: Path, epoch: int) -> None:
        per_language = result.per_language()
        metrics = {"filter/kept": float(result.kept.sum()), "filter/epoch": float(epoch)}
        for lang, stats in per_language.items():
            metrics[f"filter/kept/{lang}"] = float(stats["kept"])
            if stats["score_mean"] is not None:
                metrics[f"filter/score_mean/{lang}"] = stats["score_mean"]
        dropped = [
            [row.id, row.language, result.score(i), result.reason(i)]
            for i, row in enumerate(rows)
            if not result.kept[i]
        ]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(key="filter/conflict", images=[str(heatmap)], caption=[f"epoch {epoch}"])
                logger.log_table(key="filter/dropped", columns=["id", "language", "score", "reason"], data=dropped)
        summary = ", ".join(f"{lang} {s['kept']}/{s['total']}" for lang, s in per_language.items())
        pl.utilities.rank_zero_info(f"ConGrad epoch {epoch}: kept {int(result.kept.sum())}/{len(rows)} ({summary})")


def _history_name(output_dir: Path, epoch: int) -> str:
    """``epoch_<e>``: the folder that keeps this pass's files; ``epoch_<e>-2``, ... when a pass for the same
    epoch was written there before (a run resumed on other rows rescores its epoch), which stays as it was."""
    name, k = f"epoch_{epoch}", 1
    while (output_dir / name).exists():
        k += 1
        name = f"epoch_{epoch}-{k}"
    return name


def _rows_hash(datamodule) -> str | None:
    fingerprint = getattr(datamodule, "fingerprint", None)
    return fingerprint["sha256"] if fingerprint else None


def _upcoming_epoch(trainer: pl.Trainer) -> int:
    """The epoch the next training pass will be. Lightning counts an epoch "processed" before its
    ``on_train_epoch_end`` (where checkpoints are written) and "completed" only after, so in that hook
    ``current_epoch`` still names the epoch that ended; the processed count names the one to come."""
    return trainer.fit_loop.epoch_progress.current.processed


def _padded(share: list[int], n: int, world: int) -> list[int]:
    """``share`` repeated at its end up to ceil(n / world) candidates: every rank then runs the same number of
    scoring batches, which a sharded model (FSDP: collective forward and backward) needs. The sketches of
    the repeats are dropped."""
    if world == 1:
        return share
    return share + [share[-1] if share else 0] * (-(-n // world) - len(share))


def _gather_strided(trainer: pl.Trainer, local: torch.Tensor, n: int) -> torch.Tensor:
    """All ranks' sketches ``[N, w]`` in candidate order, from each rank's rows ``rank, rank + R, ...``."""
    world = trainer.world_size
    padded = local.new_zeros(-(-n // world), local.shape[1])
    padded[: len(local)] = local
    gathered = trainer.strategy.all_gather(padded.to(trainer.strategy.root_device)).cpu()  # [R, ceil(N/R), w]
    sketches = torch.empty(n, local.shape[1])
    for rank in range(world):
        sketches[rank::world] = gathered[rank, : len(range(rank, n, world))]
    return sketches
