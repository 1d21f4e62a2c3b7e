"""Every setting is declared (a type and its bounds, or passed through to someone else's ``_target_``) and
checked when the config is composed, before any model or data loads: the error names the key, the value and
what is allowed, and the entry points exit 2."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from congrad.errors import ConfigError
from congrad.filtering.surgery import AGGREGATORS
from congrad.settings import check_settings


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml") if not p.stem.startswith("_"))


EXPERIMENTS = options("experiment")
EVERY_OPTION = [  # every experiment, sweep preset and option of every group, composed on its own
    *[[f"+experiment={e}"] for e in EXPERIMENTS],
    *[[f"+sweep={s}"] for s in options("sweep")],
    *[
        ["self_reward=default", f"judge={j}", *(["judge.model.name_or_path=some/judge"] if j == "model" else [])]
        for j in options("judge")
    ],
    *[[f"{group}={o}"] for group in ("trainer", "logger", "langset", "arm") for o in options(group)],
    *[["self_reward=default", f"prompts={o}"] for o in options("prompts")],
    *[[f"eval/{part}={o}"] for part in ("win_rate", "nll", "harness") for o in options(f"eval/{part}")],
]

BAD = [
    # (config, override, key in the message, what the message says is allowed)
    ("train", "filter.keep_ratio=1.5", "filter.keep_ratio=1.5", "(0, 1]"),
    ("train", "filter.keep_ratio=0", "filter.keep_ratio=0", "(0, 1]"),
    ("train", "filter.keep_ratio=null", "filter.keep_ratio=null, filter.threshold=null", "exactly one"),
    ("train", "filter.threshold=0.2", "filter.keep_ratio=0.75, filter.threshold=0.2", "exactly one"),
    ("train", "filter.aggregator=pcgard", "filter.aggregator='pcgard'", "one of " + ", ".join(AGGREGATORS)),
    ("train", "filter.ema=1", "filter.ema=1", "[0, 1)"),
    ("train", "filter.min_per_language=-1", "filter.min_per_language=-1", ">= 0"),
    ("train", "filter.gradvac_target=1", "filter.gradvac_target=1", "(-1, 1)"),
    ("train", "sketch.width=1000", "sketch.width=1000", "power of two from 256"),
    ("train", "sketch.width=-4096", "sketch.width=-4096", "power of two"),
    ("train", "sketch.width=8388608", "sketch.width=8388608", "to 4194304"),
    ("train", "sketch.kind=bloom", "sketch.kind='bloom'", "count, gaussian"),
    ("train", "sketch.method=fast", "sketch.method='fast'", "auto, hooks, loop"),
    ("train", "sketch.params='lora_['", "sketch.params='lora_['", "regular expression"),
    ("train", "sketch.chunk_mb=0", "sketch.chunk_mb=0", "> 0"),
    ("train", "dpo.beta=0", "dpo.beta=0", "> 0"),
    ("train", "dpo.beta=-0.1", "dpo.beta=-0.1", "> 0"),
    ("train", "dpo.loss_type=hinge", "dpo.loss_type='hinge'", "sigmoid, ipo, robust"),
    ("train", "dpo.label_smoothing=0.5", "dpo.label_smoothing=0.5", "[0, 0.5)"),
    ("train", "dpo.optimizer.lr=0", "dpo.optimizer.lr=0", "> 0"),
    ("train", "dpo.on_nonfinite=ignore", "dpo.on_nonfinite='ignore'", "error, skip"),
    ("train", "data.on_bad_row=ignore", "data.on_bad_row='ignore'", "error, skip"),
    ("train", "data.val_fraction=1.0", "data.val_fraction=1.0", "[0, 1)"),
    ("train", "data.batch_size=0", "data.batch_size=0", ">= 1"),
    ("train", "data.languages=[german]", "data.languages=['german']", "ISO 639-1"),
    ("train", "data.max_prompt_length=200", "data.max_prompt_length=200", "less than data.max_length"),
    ("train", "trainer.max_epochs=0", "trainer.max_epochs=0", ">= 1"),
    ("train", "trainer.precision=bf32", "trainer.precision='bf32'", "bf16-mixed"),
    ("train", "trainer.accelerator=gpus", "trainer.accelerator='gpus'", "cuda"),
    (
        "train",
        "trainer.reload_dataloaders_every_n_epochs=0",
        "trainer.reload_dataloaders_every_n_epochs=0",
        "must be 1 while the ConGrad filter is on",
    ),
    ("train", "iterations=-1", "iterations=-1", ">= 0"),
    (
        "train",
        "+experiment=tiny_self_reward self_reward.generation.num_responses=1",
        "self_reward.generation.num_responses=1",
        ">= 2",
    ),
    (
        "train",
        "+experiment=tiny_self_reward self_reward.generation.top_p=0",
        "self_reward.generation.top_p=0",
        "(0, 1]",
    ),
    ("train", "+experiment=tiny_self_reward judge.script_weight=3", "judge.script_weight + ", "must be 5"),
    ("train", "+experiment=llama3_10lang judge.n_samples=0", "judge.n_samples=0", ">= 1"),
    ("filter", "device=gpu", "device='gpu'", "auto, cpu, cuda or cuda:N"),
    ("evaluate", "eval.win_rate.bootstrap=0", "eval.win_rate.bootstrap=0", ">= 1"),
    ("evaluate", "eval.win_rate.generation.top_p=0", "eval.win_rate.generation.top_p=0", "(0, 1]"),
    ("evaluate", "eval.pairs.per_language=0", "eval.pairs.per_language=0", ">= 1, or null"),
    ("evaluate", "eval.seen=[German]", "eval.seen=['German']", "ISO 639-1"),
    ("train", "eval.device=gpu", "eval.device='gpu'", "auto, cpu, cuda or cuda:N"),
]


@pytest.mark.parametrize("config,override,key,allowed", BAD, ids=[b[1] for b in BAD])
def test_a_bad_setting_names_the_key_and_what_is_allowed(compose_config, config, override, key, allowed):
    cfg = compose_config(config, override.split())
    with pytest.raises(ConfigError) as raised:
        check_settings(cfg)
    message = str(raised.value)
    assert message.startswith(key) and allowed in message, message


@pytest.mark.parametrize(
    "config,overrides",
    [
        ("train", []),
        ("filter", []),
        ("evaluate", []),
        *[("train", [f"+experiment={e}"]) for e in EXPERIMENTS],
        ("train", ["callbacks.congrad=null", "trainer.reload_dataloaders_every_n_epochs=0"]),
        ("train", ["filter.keep_ratio=null", "filter.threshold=0.1", "data.languages=[de,fr]", "trainer.precision=16"]),
        ("train", ["trainer=ddp"]),
        ("train", ["trainer=fsdp"]),
    ],
)
def test_the_shipped_configs_pass(compose_config, config, overrides):
    check_settings(compose_config(config, overrides))


@pytest.mark.parametrize("overrides", EVERY_OPTION, ids=[" ".join(o) for o in EVERY_OPTION])
def test_every_shipped_key_is_declared(compose_config, overrides):
    """An undeclared leaf anywhere in a shipped config fails here: the declarations forbid unknown keys."""
    check_settings(compose_config("train", overrides))


@pytest.mark.parametrize(
    "override,message",
    [
        ("+filter.keep_ration=0.3", "filter.keep_ration: no such setting (filter has "),
        ("+sketch.widht=4096", "sketch.widht: no such setting (sketch has "),
        ("+data.shufle=true", "data.shufle: no such setting (data has "),
        ("+model.lora.rnak=8", "model.lora.rnak: no such setting (model.lora has "),
        ("+seeed=1", "seeed: no such setting (the config has "),
    ],
)
def test_an_unknown_key_is_named_with_the_keys_its_group_has(compose_config, override, message):
    with pytest.raises(ConfigError) as raised:
        check_settings(compose_config("train", [override]))
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_pass_through_group_takes_its_targets_own_arguments(compose_config):
    """``trainer``, ``callbacks`` and ``dpo.optimizer`` hand their keys to Lightning and torch: one the project
    does not declare is allowed, and the declared ones are still checked beside it."""
    passed = [
        "+trainer.enable_progress_bar=false",
        "+callbacks.lr.logging_interval=step",
        "+dpo.optimizer.betas=[0.9,0.95]",
    ]
    check_settings(compose_config("train", passed))
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=0: must be an integer >= 1"):
        check_settings(compose_config("train", ["+trainer.enable_progress_bar=false", "trainer.max_epochs=0"]))


def test_every_problem_is_listed_at_once(compose_config):
    cfg = compose_config("train", ["sketch.width=1000", "dpo.beta=0"])
    listed = r"2 settings are unknown or out of bounds:\n  dpo.beta=0: .*\n  sketch.width=1000"
    with pytest.raises(ConfigError, match=listed):
        check_settings(cfg)


def test_filter_py_needs_output_dir(compose_config):
    cfg = compose_config("filter", output_dir=None)
    with pytest.raises(ConfigError, match="output_dir is required"):
        check_settings(cfg)


@pytest.mark.parametrize(
    "script,override",
    [("train", "filter.aggregator=pcgard"), ("filter", "sketch.width=1000"), ("evaluate", "data.batch_size=0")],
)
def test_both_entry_points_check_the_settings_first(compose_config, capsys, monkeypatch, script, override):
    """The function Hydra calls in train.py / filter.py: exit 2 and the key, before it would load anything."""
    import importlib.util

    import congrad.training

    monkeypatch.setattr(congrad.training, "build_pieces", lambda *a, **k: pytest.fail("something was loaded"))
    spec = importlib.util.spec_from_file_location(f"{script}_entry", ROOT / f"{script}.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    with pytest.raises(SystemExit) as raised:
        entry.main.__wrapped__(compose_config(script, [override]))  # beneath @hydra.main
    assert raised.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {override.split('=')[0]}=")


def test_train_py_stops_before_loading_anything(tmp_path):
    """As a user runs it: one line naming the key, exit 2, no traceback; the run directory holds Hydra's own
    files only (no data report, no checkpoint, no W&B run: nothing was loaded)."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "filter.aggregator=pcgard", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: filter.aggregator='pcgard': must be one of " + ", ".join(AGGREGATORS)
    )
    assert "Traceback" not in result.stderr
    assert {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log", ".lock"}  # .lock: the run held it
