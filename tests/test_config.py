"""The config tree composes: defaults, every experiment, the filter entry point; and a model that cannot
be loaded stops with a message instead of a stack trace."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from congrad.settings import check_settings

pytestmark = pytest.mark.slow(seconds=22)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_default_train_config(compose_config):
    cfg = compose_config("train")
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.model.backbone._target_.endswith("build_tiny_llama")
    assert cfg.data.path == str(ROOT / "data" / "tiny_multilingual.jsonl")
    assert cfg.logger.wandb.offline is True
    assert cfg.callbacks.congrad.sketch.width == cfg.sketch.width
    assert cfg.trainer.reload_dataloaders_every_n_epochs == 1
    assert cfg.get("self_reward") is None and cfg.iterations == 0  # one DPO run, no self-rewarding loop


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, compose_config):
    cfg = compose_config("train", [f"+experiment={experiment}"])
    assert cfg.task_name == experiment
    # a self-rewarding experiment trains on the pairs it makes from prompts; the others on data.path
    data_key = "self_reward.prompts.path" if cfg.get("self_reward") else "data.path"
    for key in (
        data_key,
        "model.tokenizer._target_",
        "dpo.optimizer.lr",
        "trainer.max_epochs",
        "sketch.width",
        "filter.aggregator",
    ):
        assert OmegaConf.select(cfg, key) is not None, key
    # ~eval drops the evaluation whole, also where the experiment sets some of it (an eval preset), and the
    # settings check passes on what is left
    without = compose_config("train", [f"+experiment={experiment}", "~eval"])
    assert without.get("eval") is None
    check_settings(without)


def test_ten_language_experiments_use_the_real_models_on_gpu(compose_config):
    expected = {"llama3_10lang": "meta-llama/Meta-Llama-3-8B-Instruct", "gemma2_10lang": "google/gemma-2-2b-it"}
    for experiment, model_id in expected.items():
        cfg = compose_config("train", [f"+experiment={experiment}"])
        assert cfg.model.backbone.name_or_path == model_id == cfg.model.tokenizer.name_or_path
        assert cfg.model.backbone.dtype == "bfloat16" and cfg.model.lora.r > 0
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
        assert len(cfg.data.languages) == 10
        assert cfg.iterations >= 1 and cfg.judge.model is None and cfg.data.path is None  # self-rewarding


def test_trainer_ddp_waits_hours_at_a_collective(compose_config):
    """trainer=ddp builds Lightning's DDPStrategy with a timeout long enough for rank 0's evaluation."""
    import datetime

    import hydra
    from pytorch_lightning.strategies import DDPStrategy

    strategy = hydra.utils.instantiate(compose_config("train", ["trainer=ddp"]).trainer.strategy)
    assert isinstance(strategy, DDPStrategy) and strategy._timeout == datetime.timedelta(hours=4)


@pytest.mark.parametrize("trainer", ["cpu", "ddp", "fsdp"])
def test_every_trainer_writes_checkpoints_atomically(compose_config, trainer, tmp_path):
    """The checkpoint plugin of conf/trainer/default.yaml reaches the strategy of every trainer group (each
    writes through it, on rank 0; tests/test_full_disk.py shows what it does on a full disk)."""
    import hydra
    import torch

    from congrad.utils.checkpoints import AtomicCheckpointIO

    cpu = [] if trainer == "cpu" else ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    cfg = compose_config("train", [f"trainer={trainer}", *cpu])
    io = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[]).strategy.checkpoint_io
    assert isinstance(io, AtomicCheckpointIO)
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, tmp_path / "ckpt" / "last.ckpt")
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.ckpt"]
    assert torch.equal(torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]["w"], torch.ones(3))


def test_filter_config_composes_and_overrides_reach_the_groups(compose_config):
    cfg = compose_config(
        "filter",
        [
            "output_dir=out",
            "data.path=x.jsonl",
            "filter.aggregator=mean",
            "sketch.width=16384",
            "sketch.params=lora",
            "filter.keep_ratio=null",
            "filter.threshold=0.1",
            "data.on_bad_row=skip",
        ],
    )
    assert (cfg.output_dir, cfg.data.path, cfg.filter.aggregator, cfg.sketch.width) == ("out", "x.jsonl", "mean", 16384)
    assert cfg.data.val_fraction == 0.0 and cfg.filter.threshold == 0.1 and cfg.data.on_bad_row == "skip"


@pytest.mark.parametrize(
    "hub_env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline", "hub-unreachable"],
)
def test_unloadable_model_stops_with_a_clear_message(tmp_path, hub_env):
    start = time.time()
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "+experiment=llama3_10lang", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf"), **hub_env},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "meta-llama/Meta-Llama-3-8B-Instruct" in result.stderr
    assert "model.name_or_path=" in result.stderr and "HF_HOME" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert time.time() - start < 60


def test_gemma3_cpu_experiment_names_the_conversion_when_the_model_is_missing(compose_config, tmp_path):
    from congrad.errors import ModelLoadError
    from congrad.models.factory import build_policy
    from congrad.utils.entry import user_error

    missing = tmp_path / "gemma-3-270m"
    cfg = compose_config("train", ["+experiment=gemma3_270m_cpu", f"model.name_or_path={missing}"])
    assert cfg.self_reward.language_match and cfg.iterations == 1
    with pytest.raises(Exception) as raised:
        build_policy(cfg.model)
    error = user_error(raised.value)  # what train.py prints, without a stack trace
    assert isinstance(error, ModelLoadError)
    assert f"python -m congrad.models.convert_gguf --out {missing}" in str(error)


def test_a_leading_tilde_of_any_setting_is_the_home_directory(monkeypatch, tmp_path):
    """The run-paths callback every entry point registers (conf/hydra/default.yaml), on the config Hydra
    composed from the command line, before Hydra uses it: quoted ~ values (Hydra's grammar wants the quotes)
    of our settings and of Hydra's run directory become paths under $HOME; interpolations, other strings and
    a ~ elsewhere stay. In a multirun the overrides every job is composed from are rewritten."""
    import hydra
    from hydra import compose, initialize_config_dir
    from omegaconf import read_write

    monkeypatch.setenv("HOME", str(tmp_path))
    overrides = [
        "data.path='~/pairs.jsonl'",
        "ckpt_path='~'",
        "+model.merge_adapters=['~/a','x~/b']",
        "hydra.run.dir='~/runs/1'",
        "sketch.params=lora",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    callback = hydra.utils.instantiate(cfg.hydra.callbacks.run_paths)
    callback.on_run_start(cfg)
    assert cfg.data.path == str(tmp_path / "pairs.jsonl") and cfg.ckpt_path == str(tmp_path)
    assert list(cfg.model.merge_adapters) == [str(tmp_path / "a"), "x~/b"]
    assert cfg.hydra.run.dir == str(tmp_path / "runs" / "1") and (tmp_path / "runs" / "1").is_dir()
    assert OmegaConf.to_container(cfg.callbacks.model_checkpoint)["dirpath"] == "${paths.output_dir}/checkpoints"

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        sweep = compose("train", return_hydra_config=True)
    with read_write(sweep):
        sweep.hydra.overrides.task = ["data.path='~/a.jsonl','~/b.jsonl'", "~eval", "seed=0,1"]
        sweep.hydra.overrides.hydra = ["hydra.sweep.dir='~/sweep'"]
    callback.on_multirun_start(sweep)
    assert list(sweep.hydra.overrides.task) == [
        f"data.path='{tmp_path}/a.jsonl','{tmp_path}/b.jsonl'",
        "~eval",
        "seed=0,1",
    ]
    assert list(sweep.hydra.overrides.hydra) == [f"hydra.sweep.dir='{tmp_path}/sweep'"]
