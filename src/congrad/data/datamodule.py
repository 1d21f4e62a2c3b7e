"""Lightning data module for preference pairs, prunable between epochs by the ConGrad filter."""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Annotated, ClassVar

import pytorch_lightning as pl
import torch
from pydantic import Field
from torch.utils.data import DataLoader, Sampler

from congrad.data.fingerprint import data_fingerprint
from congrad.data.formats import Languages, LoadReport, PreferenceRow, load_preference_rows
from congrad.data.sources import SourceSettings
from congrad.data.tokenization import (
    TRUNCATED_PARTS,
    LengthSettings,
    collate_pairs,
    pair_token_ids,
    truncate_pair,
    truncated_parts,
)
from congrad.errors import CongradError
from congrad.utils.schema import Instantiated, Text

log = logging.getLogger(__name__)

# warn when more than this share of the pairs lose the end of a completion to truncation
LOST_EOS_WARN_SHARE = 0.05


class DataSettings(Instantiated, SourceSettings, LengthSettings):
    """The ``data`` group: the arguments of :class:`PreferenceDataModule`."""

    group: ClassVar[str] = "data"
    languages: Languages | None
    val_path: Text | None
    val_fraction: Annotated[float, Field(ge=0, lt=1)]
    batch_size: Annotated[int, Field(ge=1)]
    eval_batch_size: Annotated[int, Field(ge=1)] | None
    num_workers: Annotated[int, Field(ge=0)]


class PreferenceDataModule(pl.LightningDataModule):
    """Loads, splits and tokenizes a preference set once; serves batches from :func:`collate_pairs`.

    Two numberings exist. ``PreferenceRow.index`` is a row's position in the input file; the ``index``
    of a batch is its position in :attr:`train_rows` (or :attr:`val_rows` for validation batches), so
    ``train_rows[i].index`` maps a batch entry back to the file.

    The filter callback scores every training row through :meth:`candidate_dataloader` and calls
    :meth:`set_active_indices`; the next :meth:`train_dataloader` call serves exactly the kept rows. The
    Trainer asks for a new train dataloader only with ``reload_dataloaders_every_n_epochs=1``, and it does
    so before ``on_train_epoch_start`` hooks run, so a pruning made in an epoch-start hook takes effect
    from the following epoch.

    Truncation (see :mod:`congrad.data.tokenization`) is counted in ``report.truncated`` for the pairs of
    ``path`` (training and, without ``val_path``, validation); more than 5% of them losing the end of a
    completion is warned about.

    The train loader resumes mid-epoch (:class:`ResumableLoader`): a run resumed from a checkpoint saved
    inside an epoch (a SIGTERM or Ctrl-C stop) serves the rest of that epoch's batches, in the same order.
    """

    def __init__(
        self,
        tokenizer,
        path: str,
        languages: Iterable[str] | None = None,
        on_bad_row: str = "error",
        split: str = "train",
        val_path: str | None = None,
        val_fraction: float = 0.1,
        max_length: int = 512,
        max_prompt_length: int = 256,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        name: str | None = None,
        revision: str | None = None,
        columns: dict | None = None,
        language: str | None = None,
        lang_codes: dict | None = None,
        per_language: int | None = None,
        sample: bool = False,
        min_chars: int | None = None,
        max_chars: int | None = None,
        gated: bool = False,
    ):
        super().__init__()
        DataSettings.check(val_fraction=val_fraction, max_length=max_length, max_prompt_length=max_prompt_length)
        self.tokenizer = tokenizer
        self.path = path
        self.requested_languages = None if languages is None else list(languages)
        self.on_bad_row = on_bad_row
        self.split = split
        self.val_path = val_path
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        # how the source is read (congrad.data.sources.Source): a hub config, columns, languages, a cap
        self.source_options = {"name": name, "revision": revision, "columns": columns, "language": language,
                               "lang_codes": lang_codes, "per_language": per_language, "sample": sample,
                               "seed": seed, "min_chars": min_chars, "max_chars": max_chars, "gated": gated}
        pad_id = tokenizer.pad_token_id
        # pad positions are masked out, so eos is a safe stand-in for tokenizers without a pad token
        self.pad_token_id = tokenizer.eos_token_id if pad_id is None else pad_id
        self._train_rows: list[PreferenceRow] | None = None
        self._val_rows: list[PreferenceRow] = []
        self._train_features: list[dict] = []
        self._val_features: list[dict] = []
        self._report: LoadReport | None = None
        self._active: list[int] = []
        self._train_loaders_built = 0
        self._fingerprint: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train_rows is not None:
            return
        rows, self._report = self._load(self.path)
        if self.val_path is None:
            train_rows, val_rows = stratified_split(rows, self.val_fraction, self.seed)
        else:
            train_rows, (val_rows, _) = rows, self._load(self.val_path)
        self._train_features, train_cuts = self._encode(train_rows)
        self._val_features, val_cuts = self._encode(val_rows)
        cuts = train_cuts + (val_cuts if self.val_path is None else [])
        self._report.truncated = self._truncation_summary(cuts)
        self._val_rows = val_rows
        self._active = list(range(len(train_rows)))
        self._train_rows = train_rows

    @property
    def train_rows(self) -> list[PreferenceRow]:
        self._require_setup()
        return self._train_rows

    @property
    def val_rows(self) -> list[PreferenceRow]:
        self._require_setup()
        return self._val_rows

    @property
    def report(self) -> LoadReport:
        """The load report of the training data (``path``)."""
        self._require_setup()
        return self._report

    @property
    def fingerprint(self) -> dict:
        """The content hash of :attr:`train_rows` (:func:`congrad.data.fingerprint.data_fingerprint`), which
        a checkpoint records and a resumed run compares."""
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(self.train_rows, str(self.path))
        return self._fingerprint

    @property
    def languages(self) -> list[str]:
        """Languages present in the training rows, sorted."""
        return sorted({row.language for row in self.train_rows})

    @property
    def active_indices(self) -> list[int]:
        """Sorted positions in :attr:`train_rows` served for training."""
        self._require_setup()
        return list(self._active)

    def set_active_indices(self, indices: Iterable[int] | None) -> None:
        """Serve only these positions of :attr:`train_rows` from the next :meth:`train_dataloader` on;
        ``None`` serves all of them again."""
        n = len(self.train_rows)
        if indices is None:
            self._active = list(range(n))
            return
        active = sorted({int(i) for i in indices})
        if not active:
            raise ValueError("set_active_indices needs at least one index (None serves every row)")
        if active[0] < 0 or active[-1] >= n:
            raise ValueError(f"active indices must lie in [0, {n}), got {active[0]}..{active[-1]}")
        self._active = active

    def train_dataloader(self) -> DataLoader:
        """The active rows in an order fixed by ``seed`` and the epoch (the trainer's current epoch; outside
        a trainer, the number of train dataloaders built so far): a different order every epoch, and the
        same order in a run resumed from a checkpoint, however often the loader is iterated."""
        self._require_setup()
        epoch = self.trainer.current_epoch if self.trainer is not None else self._train_loaders_built
        self._train_loaders_built += 1
        features = [self._train_features[i] for i in self._active]
        return ResumableLoader(
            features, batch_size=self.batch_size, sampler=SeededPermutation(len(features), self.seed + epoch),
            num_workers=self.num_workers, collate_fn=partial(collate_pairs, pad_token_id=self.pad_token_id),
            epoch=epoch, batches_done=self._batches_done,
        )

    def _batches_done(self) -> int:
        """Batches of the current epoch the trainer has finished."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def val_dataloader(self) -> DataLoader | list:
        """Validation rows in order; an empty list when there are none (Lightning then skips validation)."""
        self._require_setup()
        if not self._val_features:
            return []
        return self._loader(self._val_features, self.eval_batch_size)

    def candidate_dataloader(self, batch_size: int | None = None, indices: Sequence[int] | None = None) -> DataLoader:
        """Every training row, active or not, in order: the candidates the filter scores (only the
        positions ``indices`` of :attr:`train_rows`, when given: one rank's share)."""
        self._require_setup()
        features = self._train_features if indices is None else [self._train_features[i] for i in indices]
        return self._loader(features, batch_size or self.eval_batch_size)

    def _load(self, path: str) -> tuple[list[PreferenceRow], LoadReport]:
        return load_preference_rows(path, split=self.split, languages=self.requested_languages,
                                    on_bad_row=self.on_bad_row, **self.source_options)

    def _encode(self, rows: list[PreferenceRow]) -> tuple[list[dict], list[dict]]:
        """Features of ``rows`` and, per row, what truncation cut (:func:`truncated_parts`, with its language)."""
        features, cuts = [], []
        for position, row in enumerate(rows):
            full = pair_token_ids(self.tokenizer, row)
            kept = truncate_pair(**full, max_length=self.max_length, max_prompt_length=self.max_prompt_length)
            features.append({**kept, "index": position, "language": row.language})
            cuts.append({**truncated_parts(full, kept), "language": row.language})
        return features, cuts

    def truncation_metrics(self) -> dict[str, float]:
        """``data/truncated/<part>`` (pairs whose prompt / chosen / rejected was cut, or that lost an eos) and
        ``data/truncated/lost_eos/<lang>``, from :attr:`report`, for the loggers."""
        truncated = self.report.truncated
        metrics = {f"data/truncated/{part}": float(truncated[part]) for part in TRUNCATED_PARTS}
        for language, counts in truncated["by_language"].items():
            metrics[f"data/truncated/lost_eos/{language}"] = float(counts["lost_eos"])
        return metrics

    def _truncation_summary(self, cuts: list[dict]) -> dict:
        """``{"max_length", "max_prompt_length", "pairs", "prompt", "chosen", "rejected", "lost_eos",
        "by_language": {lang: {"pairs", "prompt", ...}}}``: pair counts; warns when too many lose an eos."""
        summary = {"max_length": self.max_length, "max_prompt_length": self.max_prompt_length,
                   **_count_cuts(cuts), "by_language": {}}
        for language in sorted({c["language"] for c in cuts}):
            summary["by_language"][language] = _count_cuts([c for c in cuts if c["language"] == language])
        if summary["lost_eos"] > LOST_EOS_WARN_SHARE * summary["pairs"]:
            log.warning(
                "%d of %d pairs (%.0f%%) lose the end of a completion (its eos) to truncation at data.max_length=%d, "
                "data.max_prompt_length=%d (prompt cut in %d, chosen in %d, rejected in %d pairs): the policy "
                "never learns where those answers end. Raise data.max_length (and data.max_prompt_length) so "
                "that the pairs fit (counts per language: 'truncated' in the data report).",
                summary["lost_eos"], summary["pairs"], 100 * summary["lost_eos"] / summary["pairs"],
                self.max_length, self.max_prompt_length, summary["prompt"], summary["chosen"], summary["rejected"],
            )
        return summary

    def _loader(self, features: list[dict], batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            features,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            collate_fn=partial(collate_pairs, pad_token_id=self.pad_token_id),
        )

    def _require_setup(self) -> None:
        if self._train_rows is None:
            raise RuntimeError("PreferenceDataModule.setup() must be called first")


def _count_cuts(cuts: list[dict]) -> dict[str, int]:
    counts = Counter(part for cut in cuts for part in TRUNCATED_PARTS if cut[part])
    return {"pairs": len(cuts), **{part: counts[part] for part in TRUNCATED_PARTS}}
class ResumableLoader(DataLoader):
    """The train loader of epoch ``epoch``, resumable mid-epoch: Lightning stores its :meth:`state_dict` in a
    checkpoint (the epoch and the batches the trainer finished in it, from ``batches_done``) and, resuming
    inside that epoch, loads it into the loader of the resumed run, which then skips those batches once.
    Skipping on the batches (not the sampler) keeps it right when Lightning wraps the sampler for DDP."""

    def __init__(self, *args, epoch: int = 0, batches_done: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = epoch
        self.batches_done = batches_done
        self._skip = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.batches_done() if self.batches_done else 0}

    def load_state_dict(self, state: dict) -> None:
        done = int(state.get("batches_done", 0))
        if state.get("epoch") == self.epoch and 0 < done < len(self):
            self._skip = done

    def __iter__(self):
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        for _ in range(skip):
            next(iterator)
        return iterator


class SeededPermutation(Sampler[int]):
    """A random permutation of ``range(n)`` drawn from ``seed`` alone: the same one every time it is
    iterated (a generator-backed shuffle would advance with every extra iteration)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist())

    def __len__(self) -> int:
        return self.n


def stratified_split(
    rows: list[PreferenceRow], val_fraction: float, seed: int
) -> tuple[list[PreferenceRow], list[PreferenceRow]]:
    """Split per language: ``round(n * val_fraction)`` rows of each language go to validation, at least
    one when the language has two or more rows and ``val_fraction > 0``, and never all of them. Both
    parts keep input order; the choice depends only on ``seed`` and the language's own rows."""
    by_language: dict[str, list[PreferenceRow]] = defaultdict(list)
    for row in rows:
        by_language[row.language].append(row)
    val_ids: set[int] = set()
    for language, group in by_language.items():
        n = len(group)
        if val_fraction == 0 or n < 2:
            continue
        n_val = min(max(1, round(n * val_fraction)), n - 1)
        chosen = random.Random(f"{seed}:{language}").sample(range(n), n_val)
        val_ids.update(group[i].index for i in chosen)
    train = [row for row in rows if row.index not in val_ids]
    val = [row for row in rows if row.index in val_ids]
    return train, val
