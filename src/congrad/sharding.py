"""``trainer=fsdp``: Lightning's model-parallel strategy with FSDP2 applied to a DPO policy.

:class:`FSDP2Strategy` is ``pytorch_lightning.strategies.ModelParallelStrategy`` (FSDP2, ``fully_shard``) that
shards the policy itself, so the LightningModule needs no ``configure_model``: every decoder layer (the
classes transformers lists in ``_no_split_modules``), then the whole policy, is ``fully_shard``-ed over all
processes (pure data parallelism: each process holds 1/world of every weight, adapter and optimizer
moment, and gathers one layer at a time). The reference is the policy with its adapter disabled, so it is
sharded with it; a full fine-tuning run's frozen reference copy is sharded the same way.

The ConGrad pass needs nothing special: it sketches from layer inputs and output-gradients, which every
process has in full for its own rows, and differentiates with respect to an anchor rather than the
(sharded) parameters (:mod:`congrad.filtering.capture`). What FSDP adds is that its forward and backward
are collective, so every process must run the same number of scoring batches; the callback pads each
process's share of the candidates to the same length (:mod:`congrad.filtering.callback`).

Checkpoints are one file with the full, unsharded trainable state (``save_distributed_checkpoint=False``),
and the optimizer state is keyed the way a single process keys it (the position of each parameter among the
optimizer's parameters): a run checkpointed under FSDP on N processes resumes on M processes, under FSDP,
DDP or on one device, and the other way round. A resume restores as DDP does: the weights go into the model
before it is sharded, so callbacks (the ConGrad filter's ``on_fit_start``) already see them; the optimizer
state follows once the model is sharded.

Lightning refuses its own ``strategy=fsdp`` (FSDP1) without CUDA; this strategy runs on CPU processes with
gloo as well, which is how the tests check it.

Not yet covered: the evaluation after the fit (``eval``) runs on rank 0 alone and moves the policy with
``.to(device)``, which FSDP2 answers by resharding; with sharded parameters that cannot work (collectives on
one rank, sharded embeddings under ``generate``). Train with ``~eval`` and evaluate the saved adapter with
``evaluate.py``. The self-rewarding loop under this strategy is untested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from torch import nn


def decoder_layers(policy: nn.Module) -> list[nn.Module]:
    """The modules to shard one by one: instances of the classes the (possibly peft-wrapped) transformers
    model names in ``_no_split_modules``."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in policy.modules() if type(m).__name__ in names]


class FSDP2Strategy(ModelParallelStrategy):
    """Data-parallel FSDP2 over all processes for a :class:`congrad.models.DPOModule` (see the module
    docstring). ``reshard_after_forward``: free each gathered layer after its forward (less memory, one more
    all-gather in the backward)."""

    strategy_name = "congrad_fsdp2"

    def __init__(self, reshard_after_forward: bool = True, **kwargs: Any):
        kwargs.setdefault("save_distributed_checkpoint", False)
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, **kwargs)
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every process: one data-parallel rank
        super().setup_environment()

    def setup(self, trainer) -> None:
        self.shard(self.lightning_module)
        # ModelParallelStrategy.setup, without its demand for a configure_model (sharding is done above); the
        # helpers come from the module that defines it, so they are the ones it uses
        from pytorch_lightning.strategies import model_parallel as parent

        self.accelerator.setup(trainer)
        parent._materialize_distributed_module(self.model, self.root_device)
        self.model = self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.barrier()
        fitting = trainer.state.fn == parent.TrainerFn.FITTING
        if fitting:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if fitting:
            parent._optimizers_to_device(self.optimizers, self.root_device)

    def shard(self, module: nn.Module) -> None:
        """``fully_shard`` the policy (layer by layer, then whole) and a frozen reference copy, if any."""
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for model in (getattr(module, "policy", None), getattr(module, "reference", None)):
            if model is None or _is_sharded(model):
                continue
            model.to(self.root_device)
            for layer in decoder_layers(model):
                fully_shard(layer, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
            fully_shard(model, mesh=mesh, reshard_after_forward=self.reshard_after_forward)

    # ---- checkpoints: optimizer state keyed as a single process keys it ----------------------------------
    def optimizer_state(self, optimizer) -> dict[str, Any]:
        """The full optimizer state (rank 0; empty elsewhere) keyed by each parameter's position among the
        optimizer's parameters, as ``torch.optim.Optimizer.state_dict`` of an unsharded run keys it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optimizer = getattr(optimizer, "_optimizer", optimizer)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        by_name = get_optimizer_state_dict(self.model, optimizer, options=options)
        if self.global_rank != 0:
            return {}
        position = {name: i for i, name in enumerate(_optimizer_param_names(self.model, optimizer))}
        return {
            "state": {position[name]: value for name, value in by_name["state"].items()},
            "param_groups": [
                {**group, "params": [position[name] for name in group["params"]]} for group in by_name["param_groups"]
            ],
        }

    # Restore like DDP, not like ModelParallelStrategy: the full checkpoint is read and the trainable weights
    # loaded into the still unsharded model *before* setup, so callbacks see the restored weights in
    # on_fit_start (Lightning calls it before restoring a strategy that restores after setup); the optimizer
    # state is loaded after sharding, when the optimizers exist.
    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return False

    @property
    def lightning_restore_optimizer(self) -> bool:
        return True

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """A full checkpoint (one file, written under any strategy and number of processes)."""
        return torch.load(checkpoint_path, map_location="cpu", weights_only=weights_only)

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        if _is_sharded(self.lightning_module):
            raise RuntimeError("FSDP2Strategy loads model weights before sharding the model")
        self.lightning_module.load_state_dict(checkpoint["state_dict"], strict=strict)

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        """The optimizer state keyed by position (see :meth:`optimizer_state`), into the sharded optimizers."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"]):
            optimizer = getattr(optimizer, "_optimizer", optimizer)
            names = _optimizer_param_names(self.model, optimizer)
            by_name = {
                "state": {names[i]: value for i, value in state["state"].items()},
                "param_groups": [
                    {**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]
                ],
            }
            set_optimizer_state_dict(
                self.model,
                optimizer,
                optim_state_dict=by_name,
                options=StateDictOptions(full_state_dict=True, strict=False),
            )


def _is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _optimizer_param_names(model: nn.Module, optimizer) -> list[str]:
    """The fully qualified names of the optimizer's parameters, in the optimizer's order."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
