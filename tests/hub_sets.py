"""Local copies of hub data sets, laid out as on the hub: a folder whose README card lists its configs and
splits and the files of each (``datasets.load_dataset(folder, config, split=...)`` reads it as it reads the hub
id). The rows follow the schemas of ``BENCHMARKS.md``, a few per language."""

from __future__ import annotations

import json
from pathlib import Path

# ISO 639-1 code -> the set's own code
X_ALPACAEVAL_SPLITS = {"en": "english", "zh": "chinese", "ko": "korean", "it": "italian", "es": "spanish"}
FLORES = {
    "en": "eng_Latn",
    "de": "deu_Latn",
    "zh": "zho_Hans",
    "ar": "arb_Arab",
    "hi": "hin_Deva",
    "fr": "fra_Latn",
    "es": "spa_Latn",
    "it": "ita_Latn",
    "ru": "rus_Cyrl",
    "ja": "jpn_Jpan",
}
AYA_CODES = {
    "en": ("English", "eng"),
    "de": ("German", "deu"),
    "zh": ("Chinese", "zho"),
    "ar": ("Standard Arabic", "arb"),
    "fr": ("French", "fra"),
    "ceb": ("Cebuano", "ceb"),
}


def write_hub_set(root: Path, configs: dict[str, dict[str, list[dict]]]) -> Path:
    """``root`` laid out as a hub data set: ``{config: {split: rows}}``, one JSON-lines file per config and
    split, and the README card that maps them."""
    card = ["---", "configs:"]
    for config, splits in configs.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            file = Path(config) / f"{split}.jsonl"
            (root / config).mkdir(parents=True, exist_ok=True)
            (root / file).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            card += [f"  - split: {split}", f"    path: {file.as_posix()}"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]), encoding="utf-8")
    return root


def x_alpacaeval(root: Path, per_language: int = 3) -> Path:
    """``zhihz0535/X-AlpacaEval``: one config, splits named by language word; ``id``, ``dataset``, ``instruction``."""
    splits = {
        word: [
            {"id": i, "dataset": "helpful_base", "instruction": f"{word} instruction {i}"} for i in range(per_language)
        ]
        for word in X_ALPACAEVAL_SPLITS.values()
    }
    return write_hub_set(root, {"default": splits})


def x_alpacaeval10(
    root: Path, languages=("de", "fr", "es", "it", "ru", "zh", "ja", "ar", "ko", "th"), per_language: int = 2
) -> Path:
    """X-AlpacaEval's ten-language extension (GitHub): ``{lang}.json``, a JSON list of ``{"id", "dataset",
    "instruction"}``."""
    root.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        rows = [
            {"id": i, "dataset": "helpful_base", "instruction": f"{lang} instruction {i}"} for i in range(per_language)
        ]
        (root / f"{lang}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return root


def m_arenahard(root: Path, languages=("en", "de", "zh", "ar"), per_language: int = 3) -> Path:
    """``CohereForAI/m-ArenaHard``: one config per language, split ``test``; ``question_id``, ``category``,
    ``cluster``, ``prompt``."""
    return write_hub_set(
        root,
        {
            lang: {
                "test": [
                    {
                        "question_id": f"q{i:03d}",
                        "category": "arena-hard-v0.1",
                        "cluster": "Coding",
                        "prompt": f"[{lang}] task {i}",
                    }
                    for i in range(per_language)
                ]
            }
            for lang in languages
        },
    )


def flores_plus(root: Path, languages=("en", "de", "zh"), per_language: int = 3, codes=None) -> Path:
    """``openlanguagedata/flores_plus``: one config per FLORES code, splits ``dev`` and ``devtest``; ``id``,
    ``text`` and metadata (``codes``: ISO 639-1 -> FLORES code, :data:`FLORES` by default)."""
    codes = codes or FLORES

    def rows(lang, split):
        iso3, script = codes[lang].split("_")
        return [
            {
                "id": i,
                "iso_639_3": iso3,
                "iso_15924": script,
                "glottocode": "xxxx1234",
                "text": f"{split} {lang} {i}",
                "url": "https://example.org",
                "domain": "wikinews",
                "topic": "health",
                "has_image": 0,
                "has_hyperlink": 0,
                "last_updated": "2.0",
            }
            for i in range(per_language)
        ]

    return write_hub_set(
        root, {codes[lang]: {split: rows(lang, split) for split in ("dev", "devtest")} for lang in languages}
    )


def aya_dataset(root: Path, per_language: int = 4) -> Path:
    """``CohereForAI/aya_dataset``: splits ``train`` and ``test``; ``inputs``, ``targets``, ``language`` (a
    name), ``language_code`` (ISO 639-3), ``annotation_type``, ``user_id``. Prompt i of a language is
    ``10 * (i + 1)`` characters long."""

    def rows(split):
        return [
            {
                "inputs": f"{lang}{i}".ljust(10 * (i + 1), "x"),
                "targets": f"answer {i}",
                "language": name,
                "language_code": code,
                "annotation_type": "original-annotations",
                "user_id": f"u{i}",
            }
            for lang, (name, code) in AYA_CODES.items()
            for i in range(per_language)
        ]

    return write_hub_set(root, {"default": {"train": rows("train"), "test": rows("test")[:2]}})


def alpagasus(root: Path, languages=("en", "de", "zh"), per_language: int = 3) -> Path:
    """Multilingual Alpagasus (a GitHub download): one ``{lang}.jsonl`` per language of ``{"id", "instruction"}``."""
    root.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        (root / f"{lang}.jsonl").write_text(
            "".join(
                json.dumps({"id": f"alpagasus_{i}", "instruction": f"{lang} instruction {i}"}, ensure_ascii=False)
                + "\n"
                for i in range(per_language)
            ),
            encoding="utf-8",
        )
    return root


def ultrafeedback_binarized(root: Path) -> Path:
    """``trl-lib/ultrafeedback_binarized`` (TRL's implicit-prompt preference format): ``chosen`` and
    ``rejected`` whole conversations sharing the user turn, ``score_chosen``, ``score_rejected``."""

    def pair(i):
        user = {"role": "user", "content": f"Question {i}?"}
        return {
            "chosen": [user, {"role": "assistant", "content": f"Good answer {i}."}],
            "rejected": [user, {"role": "assistant", "content": f"Bad answer {i}."}],
            "score_chosen": 8.0,
            "score_rejected": 3.0,
        }

    return write_hub_set(root, {"default": {"train": [pair(i) for i in range(4)], "test": [pair(9)]}})
