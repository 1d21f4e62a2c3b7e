"""Every setting that names something outside the project — a model or tokenizer, an adapter, a checkpoint, a
data or evaluation set, a run to evaluate, a logger that needs an account — is checked before anything loads:
what is wrong is one line naming the setting and its value, exit 2. Hub ids are looked up in the local
Hugging Face cache, then (with network) asked about within seconds: a fake hub on localhost answers the way
the real one does for a gated or a missing repository."""

import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT
from huggingface_hub import constants

import congrad.evaluation.evaluator
import congrad.selfreward.loop
import congrad.training
from congrad.errors import ConfigError
from congrad.preflight import check_references

pytestmark = pytest.mark.slow(seconds=15)


def problem(cfg, program):
    """The message check_references raises for ``cfg`` (None when every reference can be used)."""
    try:
        check_references(cfg, program)
    except ConfigError as err:
        return str(err)
    return None


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if a model, the training data, the prompts or an evaluation set is loaded."""

    def loaded(*args, **kwargs):
        pytest.fail("something was loaded before the error")

    monkeypatch.setattr(congrad.training, "build_pieces", loaded)
    monkeypatch.setattr(congrad.selfreward.loop, "load_prompts", loaded)
    monkeypatch.setattr(congrad.evaluation.evaluator, "load_eval_sets", loaded)


def entry_point(script):
    """The function Hydra calls in ``script``.py, beneath @hydra.main."""
    spec = importlib.util.spec_from_file_location(f"{script}_entry", ROOT / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main.__wrapped__


def stops_with(script, cfg, capsys) -> str:
    """Run the entry point on ``cfg``: it must exit 2 with one ``error:`` line; that line."""
    with pytest.raises(SystemExit) as raised:
        entry_point(script)(cfg)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A real peft adapter of the tiny policy (what train.py saves as adapter/)."""
    from congrad.models import build_policy
    from congrad.utils.project import compose_config

    _, policy = build_policy(compose_config("train").model)
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    policy.save_pretrained(path)
    return path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test; ``add(repo_id)`` puts a model's config.json into it as the hub
    client lays it out (refs/main -> snapshots/<commit>/)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def add(repo_id, filename="config.json"):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0" * 40)
        (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
        (repo / "snapshots" / ("0" * 40) / filename).write_text("{}")

    return add


class FakeHub(http.server.BaseHTTPRequestHandler):
    """The hub's auth check as it answers: 200 for a repository this user may read, 403 + GatedRepo for a gated
    one without access, 404 + RepoNotFound for one that does not exist (or is private)."""

    def do_GET(self):
        repo = self.path.split("/api/")[1].rsplit("/auth-check", 1)[0].split("/", 1)[1]
        status, code = {
            "org/open": (200, None),
            "org/gated": (403, "GatedRepo"),
            "org/gated-set": (403, "GatedRepo"),
        }.get(repo, (404, "RepoNotFound"))
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def online_hub(monkeypatch, hub_cache):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()


# ---- models and tokenizers -----------------------------------------------------------------------------------


def test_a_hub_model_not_in_the_cache_without_network_says_what_to_set(compose_config, hub_cache):
    """docs/running.md's promise for real models: no network, not cached -> one line naming model.name_or_path, what to
    set it to, and HF_HOME; once the cache holds it, it passes."""
    cfg = compose_config("train", ["model=llama3_8b"])
    message = problem(cfg, "train")
    assert message.startswith(
        "model.name_or_path=meta-llama/Meta-Llama-3-8B-Instruct: not a local path and not in "
        "the local Hugging Face cache, and HF_HUB_OFFLINE is set"
    )
    assert "\n" not in message and "model.name_or_path=DIR" in message and "HF_HOME" in message
    hub_cache("meta-llama/Meta-Llama-3-8B-Instruct")
    assert problem(cfg, "train") is None


def test_a_model_folder_that_is_missing_or_not_a_model_is_named(compose_config, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "tokenizer.json").write_text("{}")
    assert problem(compose_config("filter", ["model=llama3_8b", f"model.name_or_path={empty}"]), "filter") == (
        f"model.name_or_path={empty} is not a model folder: it has no config.json"
    )
    missing = tmp_path / "nowhere" / "llama"
    assert problem(compose_config("train", ["model=llama3_8b", f"model.name_or_path={missing}"]), "train") == (
        f"model.name_or_path={missing}: no such folder"
    )
    cfg = compose_config("train", ["model=gemma3_270m", f"model.name_or_path={missing}"])
    assert problem(cfg, "train") == (
        f"model.name_or_path={missing} does not exist; create it once with "
        f"`python -m congrad.models.convert_gguf --out {missing}`"
    )


def test_a_gated_or_missing_hub_repository_is_named_when_the_hub_answers(compose_config, online_hub):
    cfg = compose_config("train", ["model=llama3_8b", "model.name_or_path=org/gated"])
    message = problem(cfg, "train")
    assert message.startswith(
        "model.name_or_path=org/gated: not a local path and not in the local Hugging Face "
        "cache, and it is gated on the hub: accept its licence on "
    )
    assert message.endswith("/org/gated and log in with `huggingface-cli login` (or set HF_TOKEN)")
    assert "has no model 'org/nope'" in problem(
        compose_config("train", ["model=llama3_8b", "model.name_or_path=org/nope"]), "train"
    )
    assert problem(compose_config("train", ["model=llama3_8b", "model.name_or_path=org/open"]), "train") is None


def test_the_judge_model_is_checked_where_it_judges(compose_config, hub_cache):
    judge = ["judge=model", "judge.model.name_or_path=Qwen/Qwen2.5-7B-Instruct"]
    evaluate = compose_config("evaluate", ["output_dir=out", *judge], resolve=False)
    message = problem(evaluate, "evaluate")
    assert (
        message.startswith(
            "judge.model.name_or_path=Qwen/Qwen2.5-7B-Instruct: not a local path and not in the "
            "local Hugging Face cache"
        )
        and "set judge.model.name_or_path=DIR" in message
    )
    # without a win rate and without the loop, nothing is judged: the judge is not loaded, so not checked
    assert problem(compose_config("train", [*judge, "eval.win_rate.enabled=false"], resolve=False), "train") is None
    hub_cache("Qwen/Qwen2.5-7B-Instruct")
    assert problem(evaluate, "evaluate") is None


# ---- adapters ------------------------------------------------------------------------------------------------


def test_an_adapter_folder_that_is_not_a_peft_adapter_is_one_line_from_evaluate_py(
    compose_config, adapter, tmp_path, capsys, nothing_loads
):
    """The reproduction: adapter_config.json of {} made peft raise KeyError: 'peft_type' after loading the base."""
    assert (
        problem(compose_config("evaluate", ["output_dir=out", f"model.lora.adapter_path={adapter}"]), "evaluate")
        is None
    )
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    (bad / "adapter_config.json").write_text("{}")
    line = stops_with(
        "evaluate",
        compose_config("evaluate", [f"output_dir={tmp_path / 'out'}", f"model.lora.adapter_path={bad}"]),
        capsys,
    )
    assert line == (
        f"error: model.lora.adapter_path={bad}: {bad / 'adapter_config.json'} is not a peft adapter "
        "config (no peft_type); give the adapter/ of a train.py run"
    )


def test_merge_and_baseline_adapters_are_checked_like_the_start_adapter(compose_config, adapter, tmp_path):
    unknown, weightless = tmp_path / "unknown", tmp_path / "weightless"
    shutil.copytree(adapter, unknown)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (unknown / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORAX"}))
    shutil.copytree(adapter, weightless)
    (weightless / "adapter_model.safetensors").unlink()
    cfg = compose_config(
        "train", [f"+model.merge_adapters=[{adapter},{tmp_path}]", f"eval.baseline_adapters=[{unknown},{weightless}]"]
    )
    assert problem(cfg, "train").splitlines() == [
        "3 settings name something that cannot be used:",
        f"  model.merge_adapters[1]={tmp_path}: {tmp_path} is not a peft adapter (no adapter_config.json); give "
        "the adapter/ of a train.py run",
        f"  eval.baseline_adapters[0]={unknown}: {unknown / 'adapter_config.json'} is not a peft adapter config "
        "(peft_type 'LORAX' is not one peft knows); give the adapter/ of a train.py run",
        f"  eval.baseline_adapters[1]={weightless}: {weightless} holds no adapter weights "
        "(adapter_model.safetensors or adapter_model.bin)",
    ]


# ---- checkpoints ---------------------------------------------------------------------------------------------


def test_ckpt_path_is_checked_before_anything_loads(compose_config, tmp_path, capsys, nothing_loads):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"")
    assert stops_with("train", compose_config("train", [f"ckpt_path={tmp_path / 'gone.ckpt'}"]), capsys) == (
        f"error: ckpt_path={tmp_path / 'gone.ckpt'}: no such file"
    )
    assert stops_with("train", compose_config("train", [f"ckpt_path={folder}"]), capsys) == (
        f"error: ckpt_path={folder} is a directory: give the checkpoint file, e.g. ckpt_path={folder / 'last.ckpt'}"
    )


def test_a_checkpoint_that_cannot_be_read_is_named(compose_config, tmp_path):
    if os.geteuid() == 0:  # root reads any file whatever its mode; this one fails to read for everyone
        locked, reason = "/proc/self/mem", "Input/output error"
    else:
        locked, reason = tmp_path / "locked.ckpt", "Permission denied"
        locked.write_bytes(b"PK\x03\x04")
        locked.chmod(0)
    assert problem(compose_config("train", [f"ckpt_path={locked}"]), "train") == (
        f"ckpt_path={locked} cannot be read ({reason})"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_a_data_file_that_cannot_be_read_is_named(compose_config, tmp_path):
    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")
    locked.chmod(0)
    assert problem(compose_config("train", [f"data.path={locked}"]), "train") == (
        f"data.path={locked} cannot be read (permission denied)"
    )


# ---- data and evaluation sets --------------------------------------------------------------------------------


def test_missing_data_prompt_and_evaluation_files_are_named_with_their_setting(compose_config, tmp_path):
    gone = tmp_path / "gone.jsonl"
    cfg = compose_config(
        "train",
        [
            f"data.path={gone}",
            f"data.val_path={tmp_path / 'val.jsonl'}",
            f"eval.nll.path={tmp_path / 'texts.jsonl'}",
            f"+eval.harness.files.mine={gone}",
        ],
    )
    assert problem(cfg, "train").splitlines()[1:] == [
        f"  data.path={gone}: no such file or folder",
        f"  data.val_path={tmp_path / 'val.jsonl'}: no such file or folder",
        f"  eval.nll.path={tmp_path / 'texts.jsonl'}: no such file or folder (or switch the part off: "
        "eval.nll.enabled=false)",
        f"  eval.harness.files.mine={gone}: no such file or folder (or switch the part off: "
        "eval.harness.enabled=false)",
    ]
    loop = compose_config("train", ["+experiment=tiny_self_reward", f"self_reward.prompts.path={gone}", "~eval"])
    assert problem(loop, "train") == f"self_reward.prompts.path={gone}: no such file or folder"
    # evaluate.py reads no training data; a set split by language is checked part by part by its loader
    assert problem(compose_config("evaluate", ["output_dir=out", f"data.path={gone}"]), "evaluate") is None
    assert problem(compose_config("train", [f"data.path='{tmp_path}/pairs_{{lang}}.jsonl'"]), "train") is None


def test_a_hub_data_set_is_looked_up_in_the_cache_and_asked_about_online(
    compose_config, hub_cache, tmp_path, monkeypatch
):
    cfg = compose_config("train", ["data.path=org/pairs"])
    message = problem(cfg, "train")
    assert message.startswith(
        "data.path=org/pairs: not a local path and not in the local Hugging Face cache, and "
        "HF_HUB_OFFLINE is set (no network): download it once where there is network "
        "(`huggingface-cli download org/pairs --repo-type dataset --local-dir DIR`) and set "
        "data.path=DIR"
    )
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    (tmp_path / "datasets" / "org___pairs").mkdir(parents=True)  # loaded once before, as datasets caches it
    assert problem(cfg, "train") is None


def test_a_gated_hub_data_set_says_how_to_get_access(compose_config, online_hub):
    message = problem(compose_config("train", ["data.path=org/gated-set"]), "train")
    assert message.startswith(
        "data.path=org/gated-set: not a local path and not in the local Hugging Face cache, "
        "and it is gated on the hub: accept its licence on "
    )
    assert "/datasets/org/gated-set and log in" in message


# ---- the run evaluate.py evaluates -----------------------------------------------------------------------------


def test_run_dir_its_config_its_model_and_its_adapter_are_checked(compose_config, tmp_path, adapter):
    run = tmp_path / "run"
    assert problem(compose_config("evaluate", ["output_dir=out", f"run_dir={run}"]), "evaluate") == (
        f"run_dir={run}: no such folder (a train.py run directory, e.g. logs/train/runs/<date>_<time>)"
    )
    run.mkdir()
    assert problem(compose_config("evaluate", ["output_dir=out", f"run_dir={run}"]), "evaluate") == (
        f"run_dir={run}: no .hydra/config.yaml (not a train.py run directory)"
    )
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        f"model:\n  name_or_path: {tmp_path / 'weights'}\n  tokenizer:\n    name_or_path: ${{model.name_or_path}}\n"
    )
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    assert problem(compose_config("evaluate", ["output_dir=out", f"run_dir={run}"]), "evaluate").splitlines() == [
        "2 settings name something that cannot be used:",
        f"  run_dir={run}: config.yaml: model.name_or_path={tmp_path / 'weights'}: no such folder",
        f"  run_dir={run}: {run / 'adapter' / 'adapter_config.json'} is not a peft adapter config (no peft_type); "
        "give the adapter/ of a train.py run",
    ]
    shutil.rmtree(run / "adapter")
    shutil.copytree(adapter, run / "adapter")
    (run / ".hydra" / "config.yaml").write_text("model:\n  tokenizer:\n    vocab_size: 2048\n")
    assert problem(compose_config("evaluate", ["output_dir=out", f"run_dir={run}"]), "evaluate") is None


# ---- W&B online ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_wandb_online_without_an_account_names_both_ways_out_before_anything_loads(
    compose_config, capsys, nothing_loads, no_wandb_account
):
    cfg = compose_config("train", ["logger.wandb.offline=false"])
    line = stops_with("train", cfg, capsys)
    assert line == (
        f"error: logger.wandb.offline=false: logging to W&B online needs an account, and no API key is "
        f"configured (no WANDB_API_KEY, no entry for api.wandb.ai in {no_wandb_account}): run `wandb "
        "login` or set WANDB_API_KEY, or log offline with logger.wandb.offline=true (the default; `wandb "
        "sync` uploads the run later)"
    )
    assert problem(compose_config("train"), "train") is None  # offline, the default, needs no account
    no_wandb_account.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert problem(cfg, "train") is None  # what `wandb login` writes


def test_an_api_key_or_an_offline_mode_is_enough(compose_config, monkeypatch, no_wandb_account):
    cfg = compose_config("evaluate", ["output_dir=out", "logger.wandb.offline=false"])
    assert problem(cfg, "evaluate").startswith("logger.wandb.offline=false: logging to W&B online needs an account")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert problem(cfg, "evaluate") is None
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert problem(cfg, "evaluate") is None


# ---- as a user runs them -------------------------------------------------------------------------------------


def test_the_reproductions_end_in_one_line_and_exit_2_within_seconds(tmp_path, adapter):
    """``evaluate.py model.lora.adapter_path=DIR`` with an adapter_config.json of {}, and ``train.py
    logger.wandb.offline=false`` without a W&B key: one line each, no traceback, nothing written but Hydra's
    own files."""
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    (bad / "adapter_config.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["NETRC"] = str(tmp_path / "netrc")
    commands = {
        "evaluate": (
            [f"model.lora.adapter_path={bad}", f"output_dir={tmp_path / 'eval'}"],
            tmp_path / "eval",
            f"error: model.lora.adapter_path={bad}: {bad / 'adapter_config.json'} is not a peft adapter",
        ),
        "train": (
            ["logger.wandb.offline=false", f"hydra.run.dir={tmp_path / 'run'}"],
            tmp_path / "run",
            "error: logger.wandb.offline=false: logging to W&B online needs an account",
        ),
    }
    for script, (overrides, out, expected) in commands.items():
        start = time.time()
        result = subprocess.run(
            [sys.executable, str(ROOT / f"{script}.py"), *overrides],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert {p.name for p in out.iterdir()} <= {".hydra", f"{script}.log", ".lock"}
        assert time.time() - start < 60
