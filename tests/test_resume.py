"""A checkpoint records the training rows it was trained on: resuming on other rows is refused before the
model loads, unless resume_rescore=true; a ckpt_path that is missing, a directory, cut short or foreign is
one clear line, also before the model loads."""

import json

import pytest
import torch

import congrad.training
from congrad.data.synthetic import make_preference_rows
from congrad.errors import CongradError
from congrad.training import fit
from congrad.utils.io import write_jsonl

QUIET = [
    "~logger",
    "callbacks.congrad.progress=false",
    "+trainer.enable_progress_bar=false",
    "sketch.width=1024",
    "data.batch_size=4",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run: its data file and its last.ckpt."""
    from omegaconf import OmegaConf

    from congrad.utils.project import compose_config

    root = tmp_path_factory.mktemp("trained")
    data = root / "pairs.jsonl"
    write_jsonl(data, make_preference_rows(["en", "de", "fr"], pairs_per_language=6, seed=1))
    cfg = compose_config("train", [f"data.path={data}", "trainer.max_epochs=1", *QUIET], output_dir=root / "run")
    OmegaConf.resolve(cfg)
    fit(cfg)
    return data, root / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model is built: the error must come first."""

    def build_policy(*args, **kwargs):
        raise AssertionError("the model was built before the error")

    monkeypatch.setattr(congrad.training, "build_policy", build_policy)


def resume(compose_config, data, ckpt, *extra):
    return fit(
        compose_config("train", [f"data.path={data}", "trainer.max_epochs=2", f"ckpt_path={ckpt}", *QUIET, *extra])
    )


def other_data(tmp_path, n):
    path = tmp_path / f"other{n}.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de", "fr"], pairs_per_language=n, seed=9))
    return path


@pytest.mark.parametrize("n", [6, 3], ids=["same size", "smaller"])
def test_resuming_on_other_data_is_refused_before_the_model_loads(compose_config, trained, tmp_path, no_model, n):
    _, ckpt = trained
    with pytest.raises(CongradError) as raised:
        resume(compose_config, other_data(tmp_path, n), ckpt)
    message = str(raised.value)
    assert message.startswith(f"ckpt_path={ckpt} was trained on other data: 15 training rows of ")
    assert "resume_rescore=true" in message and "data.path" in message


def test_the_same_rows_from_another_file_resume(compose_config, trained, tmp_path):
    data, ckpt = trained
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(data.read_bytes())
    resume(compose_config, copy, ckpt)


def test_resume_rescore_scores_the_new_rows_afresh(compose_config, trained, tmp_path):
    _, ckpt = trained
    resume(compose_config, other_data(tmp_path, 3), ckpt, "resume_rescore=true")
    scores = (tmp_path / "filter" / "scores.jsonl").read_text(encoding="utf-8").split("\n")
    assert len([line for line in scores if line]) == 6  # 9 rows, 3 of them for validation


def test_a_checkpoint_of_another_model_is_named(compose_config, trained):
    data, ckpt = trained
    with pytest.raises(
        CongradError,
        match=r"does not fit the model of this run: .*lora_A.* has shape \[8, \d+\] "
        r"there, \[4, \d+\] here",
    ):
        resume(compose_config, data, ckpt, "model.lora.r=4")


def bad_checkpoints(tmp_path, ckpt):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[:4096])
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    text = tmp_path / "pairs.ckpt"
    text.write_text(json.dumps({"prompt": "not a checkpoint"}))
    plain = tmp_path / "plain.ckpt"
    torch.save({"weight": torch.zeros(2)}, plain)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}, "pytorch-lightning_version": "2.6.0"}, other)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "object": pickled}, pickled)  # a Path: not loadable with weights_only
    return {
        "missing": (tmp_path / "nope.ckpt", "no such file"),
        "directory": (ckpt.parent, f"is a directory: give the checkpoint file, e.g. ckpt_path={ckpt}"),
        "cut short": (cut, "is cut short or damaged (PytorchStreamReader failed reading zip archive"),
        "empty": (empty, "is empty"),
        "text": (text, "is not a PyTorch checkpoint"),
        "plain torch file": (plain, "is not a Lightning training checkpoint"),
        "other Lightning program": (other, "is a Lightning checkpoint of another program"),
        "pickled objects": (pickled, "holds Python objects"),
    }


def test_a_bad_ckpt_path_is_one_line_before_the_model_loads(compose_config, trained, tmp_path, no_model):
    data, ckpt = trained
    for kind, (path, expected) in bad_checkpoints(tmp_path, ckpt).items():
        with pytest.raises(CongradError) as raised:
            resume(compose_config, data, path)
        message = str(raised.value)
        assert message.startswith(f"ckpt_path={path}") and expected in message, kind
        assert "\n" not in message and "Please file an issue" not in message, kind
