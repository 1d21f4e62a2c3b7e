"""The study script's pieces that decide what an arm trains on and what its tables say (bench/realmodel.py,
bench/study_tables.py): the hand-made kept sets (``clean``, ``clean-random``), what a sketch pass records,
the precision of the pass and the evaluation, and the interference and pass tables against hand-computed
values."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from congrad.data.formats import PreferenceRow  # noqa: E402

import realmodel  # noqa: E402
import study_tables  # noqa: E402

LANGUAGES = ["en", "de", "fr", "es"]
PER_LANGUAGE = 12
FLIPPED = {("de", 0), ("de", 1), ("de", 2), ("fr", 5)}


def _rows() -> list[PreferenceRow]:
    rows = []
    for lang in LANGUAGES:
        for k in range(PER_LANGUAGE):
            i = len(rows)
            rows.append(
                PreferenceRow(
                    index=i,
                    id=str(i),
                    prompt="p",
                    chosen="c",
                    rejected="r",
                    language=lang,
                    raw={"flipped": (lang, k) in FLIPPED},
                )
            )
    return rows


def _sketches(rows) -> torch.Tensor:
    """A shared direction for every clean pair, its opposite for the flipped ones, plus noise."""
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(64, generator=g)
    signs = torch.tensor([-1.0 if row.raw["flipped"] else 1.0 for row in rows])
    return signs[:, None] * shared + 0.5 * torch.randn(len(rows), 64, generator=g)


def _cfg(seed: int):
    filter_cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "filter" / "congrad.yaml")
    return OmegaConf.create({"seed": seed, "filter": filter_cfg})


def test_clean_arms_are_the_unflipped_pairs_and_a_random_subset_the_size_of_pcgrads():
    rows, sketches = _rows(), _sketches(_rows())
    flipped = [i for i, row in enumerate(rows) if row.raw["flipped"]]
    kept, info = realmodel.kept_sets(_cfg(3), sketches, rows)
    assert set(kept) == set(realmodel.ARMS)
    assert kept["all"] == list(range(len(rows)))
    assert kept["clean"] == [i for i in range(len(rows)) if i not in flipped]
    assert len(kept["clean-random"]) == len(kept["pcgrad"]) == round(0.75 * len(rows))
    assert set(kept["clean-random"]) < set(kept["clean"]) and kept["clean-random"] == sorted(kept["clean-random"])
    assert realmodel.kept_sets(_cfg(3), sketches, rows)[0] == kept  # the same seed, the same sets
    assert realmodel.kept_sets(_cfg(4), sketches, rows)[0]["clean-random"] != kept["clean-random"]
    for arm, indices in kept.items():  # what the pass records, counted here by a plain loop
        assert info["flipped_kept"][arm] == sum(i in flipped for i in indices)
        assert info["kept_per_language"][arm] == {
            lang: sum(rows[i].language == lang for i in indices) for lang in sorted(LANGUAGES)
        }
    assert info["flipped_kept"]["clean"] == 0 and info["flipped_kept"]["all"] == len(FLIPPED)


def test_the_pass_records_the_cosines_of_the_per_language_means_of_unit_votes():
    rows, sketches = _rows(), _sketches(_rows())
    _, info = realmodel.kept_sets(_cfg(0), sketches, rows)
    votes = sketches / sketches.norm(dim=1, keepdim=True)
    means = {lang: votes[[i for i, r in enumerate(rows) if r.language == lang]].mean(0) for lang in LANGUAGES}
    order = info["aggregate_languages"]
    assert sorted(order) == sorted(LANGUAGES)
    for a, lang_a in enumerate(order):
        for b, lang_b in enumerate(order):
            expected = torch.nn.functional.cosine_similarity(means[lang_a], means[lang_b], dim=0)
            assert info["cosine_before"][a][b] == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_the_sketch_pass_and_the_evaluation_run_in_the_trainers_precision(precision, dtype):
    cfg = OmegaConf.create({"trainer": {"precision": precision}})
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with realmodel.precision_context(cfg):
        assert (a @ b).dtype == dtype


def _write_results(path: Path, languages: dict) -> None:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"languages": languages, "seen": {}, "unseen": {}}))


def test_interference_is_joint_minus_alone_per_language_with_a_paired_t_interval(tmp_path):
    alone = {"en": [0.50, 0.60, 0.55], "de": [0.70, 0.70, 0.80]}
    joint = {"en": [0.70, 0.90, 0.80], "de": [0.75, 0.60, 0.80]}
    for seed in range(3):
        _write_results(
            tmp_path / "arms" / f"clean-s{seed}" / "eval",
            {lang: {"preference_accuracy": joint[lang][seed]} for lang in joint},
        )
        for lang in alone:
            _write_results(
                tmp_path / "alone" / f"{lang}-s{seed}" / "eval", {lang: {"preference_accuracy": alone[lang][seed]}}
            )
    lines = {line.split(" | ")[0].strip("| "): line for line in study_tables.interference_table(tmp_path).splitlines()}
    # en: differences 0.20, 0.30, 0.25: mean 0.25, sd 0.05, half-width t(2) 4.303 * 0.05 / sqrt(3) = 0.124
    assert lines["en"] == "| en | 3 | +0.250 [+0.126, +0.374] * |"
    # de: differences 0.05, -0.10, 0.00: mean -0.0167, sd 0.0764, half-width 4.303 * 0.0764 / sqrt(3) = 0.190
    half = 4.303 * math.sqrt(((0.05 + 1 / 60) ** 2 + (-0.10 + 1 / 60) ** 2 + (1 / 60) ** 2) / 2) / math.sqrt(3)
    assert lines["de"] == f"| de | 3 | -0.017 [{-1 / 60 - half:+.3f}, {-1 / 60 + half:+.3f}] |"


def test_pass_table_averages_the_cosines_within_and_between_groups(tmp_path):
    cosines = [[1.0, 0.4, -0.2, -0.4], [0.4, 1.0, -0.6, 0.0], [-0.2, -0.6, 1.0, 0.8], [-0.4, 0.0, 0.8, 1.0]]
    arms = {"all": [0, 1, 2, 3, 4, 5], "pcgrad": [0, 2, 3], "mean": [0, 2, 4]}
    passes = {
        "s0": {
            "aggregate_languages": ["a", "b", "c", "d"],
            "cosine_before": cosines,
            "flipped_kept": {"all": 2, "pcgrad": 0, "mean": 1},
            "kept_per_language": {
                "all": {"a": 2, "b": 1, "c": 2, "d": 1},
                "pcgrad": {"a": 1, "c": 2},
                "mean": {"a": 1, "b": 1, "c": 1},
            },
        }
    }
    (tmp_path / "passes.json").write_text(json.dumps(passes))
    (tmp_path / "kept_sets.json").write_text(json.dumps({f"{arm}-s0": k for arm, k in arms.items()}))
    text = study_tables.passes_table(tmp_path, {"x": ["a", "b"], "y": ["c", "d"]})
    assert "| all languages | +0.000 | -0.600 |" in text  # (0.4 - 0.2 - 0.4 - 0.6 + 0.0 + 0.8) / 6
    assert "| within x | +0.400 | +0.400 |" in text
    assert "| within y | +0.800 | +0.800 |" in text
    assert "| x × y | -0.300 | -0.600 |" in text  # (-0.2 - 0.4 - 0.6 + 0.0) / 4
    assert "| pcgrad | 3 | 0 | 1 | 2 |" in text and "| mean | 3 | 1 | 2 | 1 |" in text
    assert text.rstrip().endswith("per seed: 2")  # {0, 2, 3} ^ {0, 2, 4} = {3, 4}


def test_rescoring_table_counts_what_each_epochs_pass_kept_and_what_moved(tmp_path):
    flips = tmp_path / "pairs.jsonl"
    flips.write_text("".join(json.dumps({"id": i, "flipped": i in ("b", "d")}) + "\n" for i in "abcdef"))
    passes = {  # id -> (kept, reason)
        0: {"a": (True, None), "b": (True, None), "c": (True, None), "d": (False, "below keep_ratio cut")},
        1: {
            "a": (False, "no preference signal: …"),
            "b": (False, "below keep_ratio cut"),
            "c": (True, None),
            "e": (True, None),
        },
    }
    run = tmp_path / "rescore" / "pcgrad"
    for epoch, rows in passes.items():
        (run / "filter" / f"epoch_{epoch}").mkdir(parents=True)
        (run / "filter" / f"epoch_{epoch}" / "scores.jsonl").write_text(
            "".join(
                json.dumps({"id": i, "kept": k} | ({"reason": r} if r else {})) + "\n" for i, (k, r) in rows.items()
            )
        )
    _write_results(run / "eval", {"en": {"preference_accuracy": 1.0}})
    results = json.loads((run / "eval" / "results.json").read_text())
    results |= {"seen": {"preference_accuracy": 0.75}, "unseen": {"preference_accuracy": 0.5}}
    (run / "eval" / "results.json").write_text(json.dumps(results))
    text = study_tables.rescoring_table(tmp_path, flips)
    assert "| pcgrad | 0 | 3/4 | 1 | 0 | - |" in text  # a, b, c kept; b flipped
    assert "| pcgrad | 1 | 2/4 | 0 | 1 | 1 / 2 |" in text  # c, e kept: e entered, a and b left; a had no signal
    assert "| pcgrad | seen | 0.750 |" in text and "| pcgrad | unseen | 0.500 |" in text


def test_an_archive_holds_only_the_files_the_tables_read_and_gives_the_same_tables(tmp_path):
    study, kept = tmp_path / "study", tmp_path / "kept"

    def results(path: Path, value: float) -> None:
        path.mkdir(parents=True)
        metrics = {"preference_accuracy": value}
        (path / "results.json").write_text(json.dumps({"languages": {"en": metrics}, "seen": metrics, "unseen": {}}))

    for seed in range(2):
        for arm, value in (("all", 0.5 + seed / 10), ("clean", 0.8)):
            results(study / "arms" / f"{arm}-s{seed}" / "eval", value)
        results(study / "alone" / f"en-s{seed}" / "eval", 0.7)
    epoch = study / "rescore" / "pcgrad" / "filter" / "epoch_0"
    epoch.mkdir(parents=True)
    (epoch / "scores.jsonl").write_text(json.dumps({"id": "a", "kept": True}) + "\n")
    results(study / "rescore" / "pcgrad" / "eval", 1.0)
    (study / "arms" / "all-s0" / "checkpoints").mkdir()
    (study / "arms" / "all-s0" / "checkpoints" / "last.ckpt").write_bytes(b"weights")  # not read: not kept
    copied = study_tables.archive(study, kept)
    assert len(copied) == 8 and not (kept / "arms" / "all-s0" / "checkpoints").exists()
    assert study_tables.write_tables(kept) == study_tables.write_tables(study) != ""
