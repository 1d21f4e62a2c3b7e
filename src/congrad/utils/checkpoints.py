"""Checkpoints that know which data they belong to, and ``ckpt_path`` checked before anything loads.

Every checkpoint of a fit carries a ``"congrad"`` entry (:class:`RecordData`): the content hash of the
training rows (:mod:`congrad.data.fingerprint`). Resuming, :func:`inspect_checkpoint` reads the file
(memory-mapped, ``weights_only``: cheap and safe) and says in one line what is wrong with a path that is
missing, a directory, cut short, or not a congrad training checkpoint; :func:`check_resume_data` refuses
other training rows unless ``resume_rescore=true``; :func:`check_resume_model` refuses a checkpoint whose
trainable weights do not fit the model built from the config.

:class:`AtomicCheckpointIO` (the trainer's checkpoint plugin, ``conf/trainer/default.yaml``) writes every
checkpoint into a temporary file beside its destination and renames it there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO

from congrad.errors import CongradError
from congrad.utils.io import atomic_path

KEY = "congrad"


class RecordData(pl.Callback):
    """Writes ``checkpoint["congrad"] = {"data": <the datamodule's fingerprint>}`` into every checkpoint."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[KEY] = {"data": getattr(trainer.datamodule, "fingerprint", None)}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, but each file is written to a temporary name in the destination directory
    and renamed onto it (:func:`congrad.utils.io.atomic_path`).

    Lightning's own writes to the system temp directory and moves the file; across file systems (a local
    /tmp, the run directory on NFS or Lustre) the move is a copy into the destination, and a full disk or a
    kill during it leaves a truncated ``last.ckpt``. Here the destination is either the complete previous file
    or the complete new one, and a full disk is one line naming the path (exit 2). Every strategy writes
    through its ``checkpoint_io`` on rank 0 (DDP, and :class:`congrad.sharding.FSDP2Strategy`, which saves one
    full file); paths with a URL scheme (``s3://``) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        import torch

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)


@dataclass
class CheckpointInfo:
    path: str
    data: dict | None  # the fingerprint of the rows it was trained on; None in checkpoints of older versions
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)  # trainable weights: name -> shape
    epoch: int = 0
    global_step: int = 0


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """What a resumed run needs to know of ``path``, or a CongradError naming the path and what is wrong."""
    import torch

    where = f"ckpt_path={path}"
    p = Path(path)
    if not p.exists():
        raise CongradError(f"{where}: no such file")
    if p.is_dir():
        hint = f", e.g. ckpt_path={p / 'last.ckpt'}" if (p / "last.ckpt").is_file() else ""
        raise CongradError(f"{where} is a directory: give the checkpoint file{hint}")
    with open(p, "rb") as f:
        head = f.read(4)
    if not head:
        raise CongradError(
            f"{where} is empty: a save that did not finish? Use another checkpoint of the run, "
            "e.g. an epoch_*.ckpt beside it"
        )
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CongradError(f"{where} is not a PyTorch checkpoint: give a checkpoints/*.ckpt of a train.py run")
    try:
        checkpoint = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a file it cannot read
        reason = (str(err).strip() or type(err).__name__).splitlines()[0].split(". ")[0]
        if "weights only load failed" in str(err).lower():
            raise CongradError(
                f"{where} holds Python objects that a congrad training checkpoint does not: it is "
                "not one (give a checkpoints/*.ckpt of a train.py run)"
            ) from None
        raise CongradError(
            f"{where} is cut short or damaged ({reason[:200]}): a copy or a save that did not finish? Use another "
            "checkpoint of the run, e.g. an epoch_*.ckpt beside it"
        ) from None
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "pytorch-lightning_version" not in checkpoint
    ):
        raise CongradError(
            f"{where} is not a Lightning training checkpoint: give a checkpoints/*.ckpt of a train.py run"
        )
    state = checkpoint["state_dict"]
    hparams = checkpoint.get("hyper_parameters") or {}
    if not state or not all(key.startswith("policy.") for key in state) or "beta" not in hparams:
        raise CongradError(
            f"{where} is a Lightning checkpoint of another program, not of a congrad DPO run "
            "(train.py): its weights are not a policy's"
        )
    record = checkpoint.get(KEY) or {}
    return CheckpointInfo(
        path=str(path),
        data=record.get("data"),
        params={key: tuple(value.shape) for key, value in state.items()},
        epoch=int(checkpoint.get("epoch", 0)),
        global_step=int(checkpoint.get("global_step", 0)),
    )


def check_resume_data(info: CheckpointInfo, fingerprint: dict, rescore: bool) -> bool:
    """Whether the run resumes on the rows ``info`` was trained on (True), or on others with ``rescore``
    (False); a CongradError for other rows without it."""
    if info.data is not None and info.data.get("sha256") == fingerprint["sha256"]:
        return True
    if rescore:
        return False
    now = f"this run loads {_rows(fingerprint)}"
    if info.data is None:
        raise CongradError(
            f"ckpt_path={info.path} does not record which data it was trained on (a checkpoint of an older "
            f"version); {now}. Set resume_rescore=true to resume on this run's data (the ConGrad filter scores "
            "it afresh)"
        )
    raise CongradError(
        f"ckpt_path={info.path} was trained on other data: {_rows(info.data)}; {now}. Resume with the data it was "
        "trained on (data.path, and data.languages, data.val_fraction and data.seed, which select the training "
        "rows), or set resume_rescore=true to continue training on this data (the ConGrad filter scores it "
        "afresh)"
    )


def check_resume_model(info: CheckpointInfo, module) -> None:
    """The checkpoint's trainable weights must be exactly the module's, shape for shape."""
    here = {name: tuple(p.shape) for name, p in module.named_parameters() if p.requires_grad}
    missing = sorted(set(here) - set(info.params))
    extra = sorted(set(info.params) - set(here))
    shapes = sorted(name for name in set(here) & set(info.params) if here[name] != info.params[name])
    if not (missing or extra or shapes):
        return
    if shapes:
        name = shapes[0]
        detail = f"{name} has shape {list(info.params[name])} there, {list(here[name])} here"
    elif missing:
        detail = f"it lacks {len(missing)} trainable weights of this model (e.g. {missing[0]})"
    else:
        detail = f"it has {len(extra)} weights this model does not train (e.g. {extra[0]})"
    raise CongradError(
        f"ckpt_path={info.path} does not fit the model of this run: {detail}. It was trained with other model "
        "settings (model, model.lora.r, model.lora.target_modules, ...): resume with the settings it was trained with"
    )


def _rows(fingerprint: dict) -> str:
    return f"{fingerprint['rows']} training rows of {fingerprint.get('source')} (sha256 {fingerprint['sha256'][:12]})"
