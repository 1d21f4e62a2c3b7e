"""A diverging run stops with a clear message and exit status 3, writing nothing after the failure; skipping
such steps is opt-in; weights that blow up without a NaN are warned about."""

import logging

import pytest

from congrad.data.synthetic import make_preference_rows
from congrad.errors import NonFiniteError
from congrad.training import fit
from congrad.utils.io import write_jsonl

QUIET = [
    "~logger",
    "callbacks.congrad.progress=false",
    "+trainer.enable_progress_bar=false",
    "sketch.width=1024",
    "trainer.max_epochs=1",
    "data.batch_size=2",
]


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de", "hi"], pairs_per_language=4, seed=5))
    return path


def test_a_nan_loss_stops_the_run_and_leaves_the_last_good_checkpoint_and_adapter(compose_config, pairs_file, tmp_path):
    """lr=1e20 (the ConGrad filter on, as by default): the first non-finite loss stops the fit; the
    checkpoint and adapter already in the run directory are not overwritten."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "adapter").mkdir()
    good = {
        run_dir / "checkpoints" / "last.ckpt": b"the last good checkpoint",
        run_dir / "adapter" / "adapter_model.safetensors": b"the last good adapter",
    }
    for path, content in good.items():
        path.write_bytes(content)
    cfg = compose_config("train", [f"data.path={pairs_file}", "dpo.optimizer.lr=1e20", *QUIET], output_dir=run_dir)
    with pytest.raises(NonFiniteError) as raised:
        fit(cfg)
    message = str(raised.value)
    assert raised.value.exit_code == 3
    assert message.startswith("training diverged at step ") and "the loss is nan" in message
    assert "on a batch of languages " in message
    for setting in ("dpo.optimizer.lr", "trainer.gradient_clip_val", "trainer.precision", "dpo.on_nonfinite=skip"):
        assert setting in message
    assert {p: p.read_bytes() for p in good} == good
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]


def test_skipping_is_opt_in_counted_and_logged_and_a_policy_it_leaves_diverged_is_not_saved(
    compose_config, pairs_file, tmp_path, caplog
):
    """lr=1e20 with dpo.on_nonfinite=skip: the non-finite steps are skipped, counted and warned about; the
    first step (finite) has already driven the weights to ~1e20, so at the end the run stops, exit 3, and no
    adapter is written: skipping steps never makes a diverged policy a trained one."""
    cfg = compose_config(
        "train",
        [
            f"data.path={pairs_file}",
            "dpo.optimizer.lr=1e20",
            "dpo.on_nonfinite=skip",
            *QUIET,
            "callbacks.congrad=null",
            "trainer.reload_dataloaders_every_n_epochs=0",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="congrad"), pytest.raises(NonFiniteError) as raised:
        fit(cfg)
    assert any("(1 steps skipped so far; dpo.on_nonfinite=skip)" in r.getMessage() for r in caplog.records)
    assert raised.value.exit_code == 3 and str(raised.value).startswith("training diverged by the end of epoch 0")
    assert not (tmp_path / "adapter").exists()


def test_divergence_on_the_last_step_stops_the_run_before_the_adapter_is_written(
    compose_config, pairs_file, tmp_path, caplog
):
    """The two-step run of lr=1e20 (the ConGrad filter on): the last step turns the weights to ~1e20 with a
    finite loss, so no step fails; the validation loss after it is NaN. The run stops with exit 3 before the
    epoch's checkpoint and the adapter are written, and the growth warning gives the norm (computed in float64:
    in float32 it overflowed to "inf times")."""
    cfg = compose_config(
        "train", [f"data.path={pairs_file}", "dpo.optimizer.lr=1e20", *QUIET, "data.batch_size=4"], output_dir=tmp_path
    )
    with caplog.at_level(logging.WARNING, logger="congrad"), pytest.raises(NonFiniteError) as raised:
        fit(cfg)
    message = str(raised.value)
    assert raised.value.exit_code == 3
    assert message.startswith("training diverged by the end of epoch 0 (step 2): the validation loss is nan. ")
    assert "Neither this epoch's checkpoint nor the adapter was saved" in message and "dpo.optimizer.lr" in message
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "checkpoints").exists()
    warnings = [r.getMessage() for r in caplog.records if "norm of the trainable weights" in r.getMessage()]
    assert warnings and all("inf" not in w.split("times its value")[0] for w in warnings), warnings


def test_weights_past_the_bound_at_the_end_stop_the_run(compose_config, pairs_file, tmp_path, caplog):
    """lr=1e9 drives the LoRA weights to ~1e9 with a frozen loss and no NaN: a warning during the epoch, and at
    its end, before the checkpoint and the adapter, exit 3 naming the growth."""
    cfg = compose_config(
        "train",
        [
            f"data.path={pairs_file}",
            "dpo.optimizer.lr=1e9",
            *QUIET,
            "callbacks.congrad=null",
            "trainer.reload_dataloaders_every_n_epochs=0",
        ],
        output_dir=tmp_path,
    )
    with caplog.at_level(logging.WARNING, logger="congrad"), pytest.raises(NonFiniteError) as raised:
        fit(cfg)
    warnings = [r.getMessage() for r in caplog.records if "norm of the trainable weights" in r.getMessage()]
    assert warnings and "training is probably diverging" in warnings[0] and "dpo.optimizer.lr" in warnings[0]
    message = str(raised.value)
    assert raised.value.exit_code == 3 and "the norm of the trainable weights is " in message
    assert "times its value when training started" in message and "the bound is 100 times" in message
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "checkpoints").exists()


def test_a_diverged_fit_finishes_its_wandb_run_as_failed_and_the_next_fit_gets_its_own(
    compose_config, pairs_file, tmp_path
):
    """Two fits in one process, as the jobs of a sweep or the iterations of the loop run: the first diverges
    (exit status 3). Its offline W&B run is finished with exit code 3 (complete, marked failed); the second
    fit logs into a run of its own, finished with 0."""
    import wandb
    from conftest import wandb_exit_codes

    logged = [f"data.path={pairs_file}", *[o for o in QUIET if o != "~logger"], "logger=wandb"]
    with pytest.raises(NonFiniteError):
        fit(compose_config("train", [*logged, "dpo.optimizer.lr=1e20", "data.batch_size=1"], output_dir=tmp_path / "a"))
    assert wandb.run is None, "the failed fit's W&B run is not left open"
    assert list(wandb_exit_codes(tmp_path / "a").values()) == [3]
    fit(compose_config("train", logged, output_dir=tmp_path / "b"))
    assert list(wandb_exit_codes(tmp_path / "b").values()) == [0]
    assert list(wandb_exit_codes(tmp_path / "a").values()) == [3], "nothing of the second fit went into the first run"
