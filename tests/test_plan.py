"""python -m congrad.plan: the shipped architecture numbers give the real models' exact sizes without any
download, and the estimate answers the questions it is for (does it fit; what checkpointing, more devices
and a smaller scoring batch change). Its accuracy is measured by bench/memory.py --plan."""

import json
import math
import sys

import pytest

from congrad.plan import DOES_NOT_FIT, estimate, main, settings_from_config


@pytest.mark.parametrize(
    "experiment, params, lora",
    [
        ("llama3_10lang", 8_030_261_248, 41_943_040),  # Meta-Llama-3-8B; LoRA r=16 on all linear layers
        ("gemma2_10lang", 2_614_341_888, 20_766_720),  # gemma-2-2b (tied embeddings)
    ],
)
def test_real_models_sizes_from_the_config_alone(compose_config, experiment, params, lora):
    shape, st = settings_from_config(compose_config("train", [f"+experiment={experiment}"]))
    assert shape.params == params
    assert sum(st.lora_r * sum(shape.linear[t]) for t in st.lora_targets) * shape.layers == lora
    assert st.checkpointing and st.act_bytes == 2 and st.weight_bytes == 2


def test_the_command_says_whether_it_fits(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["+experiment=llama3_10lang", "--gpu-memory", "80", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8.03B parameters" in text and "verdict: fits on 1 x 80 GiB" in text
    figures = json.loads(out.read_text())
    assert figures["fits"] and figures["estimate"]["weights"] == pytest.approx(8_030_261_248 * 2)
    assert main(["+experiment=llama3_10lang", "--gpu-memory", "24"]) == DOES_NOT_FIT == 4
    assert "does NOT fit" in capsys.readouterr().out


def test_a_script_can_gate_a_launch_on_the_exit_status(monkeypatch, capsys):
    """`python -m congrad.plan ... && python train.py ...`: the command (the module run as __main__, as
    `python -m` runs it) exits 4 when the run does not fit."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["congrad.plan", "+experiment=llama3_10lang", "--gpu-memory", "24"])
    with pytest.raises(SystemExit) as raised:
        runpy.run_module("congrad.plan", run_name="__main__")
    assert raised.value.code == 4 and "verdict: does NOT fit" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["trainer.devices=0"], "trainer.devices=0: must be auto, a number of devices >= 1"),
        (["data.batch_size=-2"], "data.batch_size=-2: must be an integer >= 1"),
        (["sketch.batch_size=-1"], "sketch.batch_size=-1: must be an integer >= 1, or null"),
        (["--gpu-memory", "-1"], "--gpu-memory -1: must be a number of GiB > 0"),
        (["--gpu-memory", "many"], "argument --gpu-memory: invalid float value: 'many'"),
        (["--candidates", "-5"], "--candidates -5: must be an integer >= 1"),
        (
            ["model=nonexistent"],
            "In 'train': Could not find 'model/nonexistent' (available: gemma2_2b, gemma3_270m, llama3_8b, tiny)",
        ),
        (["data.batch_size=4="], "Error parsing override 'data.batch_size=4='"),
    ],
)
def test_settings_and_options_are_checked_like_an_entry_point(capsys, args, expected):
    with pytest.raises(SystemExit) as raised:
        main(args)
    captured = capsys.readouterr()
    assert raised.value.code == 2 and captured.out == ""
    assert captured.err.startswith(f"error: {expected}") and captured.err.count("\n") == 1, captured.err


def test_an_unwritable_json_path_is_one_line_before_the_plan(capsys, read_only_dir, tmp_path):
    for path, expected in [
        (read_only_dir / "plan.json", f"its folder {read_only_dir} is not writable ("),
        (tmp_path, "is a directory: give the name of the file to write"),
    ]:
        with pytest.raises(SystemExit) as raised:
            main(["--json", str(path)])
        captured = capsys.readouterr()
        assert raised.value.code == 2 and captured.out == ""
        assert captured.err.startswith(f"error: --json {path}") and expected in captured.err
        assert captured.err.count("\n") == 1


def test_what_the_knobs_change(compose_config):
    base = ["+experiment=llama3_10lang"]
    ref = estimate(*settings_from_config(compose_config("train", base)))
    no_ckpt = estimate(*settings_from_config(compose_config("train", base + ["model.gradient_checkpointing=false"])))
    fsdp = estimate(*settings_from_config(compose_config("train", base + ["trainer=fsdp", "trainer.devices=4"])))
    small = estimate(*settings_from_config(compose_config("train", base + ["sketch.batch_size=2"])))
    assert no_ckpt.train > 2 * ref.train and no_ckpt.sketch > ref.sketch
    assert fsdp.weights < ref.weights / 3 and fsdp.train < ref.train
    assert small.sketch < ref.sketch and small.train == ref.train
    assert ref.sketches_host == 10000 * 4096 * 4


def test_the_flops_of_an_epochs_pass_and_of_its_training(compose_config, capsys):
    """Llama-3-8B, LoRA r=16, checkpointing (4 forwards per step), 10000 candidates of 2 x 1024 tokens, keep
    0.75: counted by hand from the parameter count (every weight but the embedding and the norms is in a
    matrix product) and the LoRA size."""
    from congrad.plan import flops

    shape, st = settings_from_config(compose_config("train", ["+experiment=llama3_10lang"]))
    matmul = 8_030_261_248 - 128_256 * 4096 - (2 * 32 + 1) * 4096
    lora = 41_943_040
    forward = 2 * (matmul + lora) + 4 * 32 * 1024 * 32 * 128  # per token; attention: QK^T and AV, 32 heads x 128
    tokens = 10000 * 2 * 1024
    f = flops(shape, st)
    assert f.train == pytest.approx(0.75 * tokens * (4 * forward + 2 * lora), rel=1e-9)
    assert f.sketch == pytest.approx(tokens * (4 * forward + 2 * lora) + 10000 * lora, rel=1e-9)
    assert f.ratio == pytest.approx(1 / 0.75, rel=1e-3)  # with LoRA a pass costs what a step costs, per pair
    every = flops(*settings_from_config(compose_config("train", ["+experiment=llama3_10lang", "sketch.params=all"])))
    assert every.sketch - f.sketch == pytest.approx(tokens * 2 * matmul + 10000 * matmul, rel=1e-9)
    main(["+experiment=llama3_10lang"])
    assert "ConGrad pass / training                                         1.33" in capsys.readouterr().out


def test_the_work_of_every_self_rewarding_iteration(tmp_path, capsys):
    """llama3_10lang: 2,000 Aya prompts in each of 10 languages (the cap: the hub's rows per language are not
    shipped), K=4, the policy judging 3 times with 256 tokens, answers of 512 tokens; 10% of the pairs held
    out, 75% of the rest kept, batches of 4 accumulated 8 times, 2 epochs."""
    out = tmp_path / "plan.json"
    assert main(["+experiment=llama3_10lang", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "self-rewarding work per iteration (pool CohereForAI/aya_dataset" in text and "102,400,000" in text
    prompts = 10 * 2000
    kept = math.ceil(0.75 * (prompts - prompts // 10))
    steps = 2 * math.ceil(math.ceil(kept / 4) / 8)
    assert json.loads(out.read_text())["iterations"] == [
        {
            "iteration": t,
            "prompts": prompts,
            "responses": 4 * prompts,
            "judge_calls": 3 * 4 * prompts,
            "tokens_to_generate": 4 * prompts * 512 + 3 * 4 * prompts * 256,
            "candidate_pairs": prompts,
            "congrad_passes": 2,
            "training_steps": steps,
        }
        for t in (1, 2, 3)
    ]


def test_the_shipped_pool_row_counts_are_the_files(compose_config):
    """The tiny pool's rows in conf/prompts/tiny.yaml, which the plan uses, count the shipped file's lines."""
    from collections import Counter

    cfg = compose_config("train", ["+experiment=tiny_self_reward"])
    lines = [json.loads(line) for line in open(cfg.self_reward.prompts.path, encoding="utf-8")]
    assert dict(cfg.self_reward.prompts.rows) == dict(Counter(row["language"] for row in lines))


def test_slices_of_a_pool_too_small_for_every_iteration_are_named(capsys):
    assert (
        main(
            [
                "+experiment=tiny_self_reward",
                "iterations=3",
                "self_reward.prompts.per_language=null",
                "self_reward.prompts.per_iteration=10",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "too few prompts in ar, de, en, es, fr, hi, it, ja, ko, pt, ru, zh for 3 slices" in text
    assert (
        main(
            [
                "+experiment=tiny_self_reward",
                "iterations=2",
                "self_reward.prompts.per_language=null",
                "self_reward.prompts.per_iteration=10",
                "data.languages=[de,zh]",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "too few" not in text and "de 24, zh 24 prompts per language, from the preset's rows" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["iteration", "prompts"])
    assert lines[header + 1].split()[:4] == [
        "1",
        "20",
        "80",
        "80",
    ]  # 2 x 10 prompts, K=4, the rule judge scores each response once
