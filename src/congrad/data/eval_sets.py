"""The evaluation sets: held-out preference pairs, prompts, reference texts and multiple-choice questions,
each row with its ``language``; the shipped ones (``data/eval/``) and how they are read and validated.

The shipped sets are generated from the held-out topics of the text tables (:data:`HELDOUT_TOPICS`:
earthquake, lightning, fossil, solar eclipse), which no training set contains, with their own seed, so no
evaluation row repeats a training row. ``python -m congrad.data.eval_sets`` writes them:

``pairs.jsonl``            preference pairs (the training format), 16 per language;
``prompts.jsonl``          ``prompt``, ``language``, ``id``: every question template × held-out topic;
``reference_texts.jsonl``  ``text``, ``language``, ``id``: correct answers, for the per-token NLL;
``multiple_choice.jsonl``  ``question``, ``choices`` (the four held-out facts of the language, shuffled),
                           ``answer`` (index of the right one), ``language``, ``id``: evaluated by
                           lm-evaluation-harness as the shipped task ``congrad_mc`` (``data/eval/harness/``,
                           rewritten from this file by ``python -m congrad.evaluation.harness``).

Users point ``eval.nll.path`` at their own reference texts, and list their own multiple-choice files in the
same format under ``eval.harness.files`` (each becomes a generated lm-eval task).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from congrad.data import formats
from congrad.data.synthetic import DEFAULT_LANGUAGES, HELDOUT_TOPICS, load_templates, make_preference_rows
from congrad.errors import BadRowError, CongradError
from congrad.utils.io import write_jsonl

SHIPPED_DIR = Path("data/eval")
EVAL_SEED = 1000  # the training sets use seed 0
PAIRS_PER_LANGUAGE = 16


@dataclass(frozen=True)
class ReferenceText:
    id: str
    text: str
    language: str


@dataclass(frozen=True)
class MultipleChoice:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    language: str


# ---- generation of the shipped sets ---------------------------------------------------------------
def make_eval_pairs(languages: Iterable[str] = DEFAULT_LANGUAGES, per_language: int = PAIRS_PER_LANGUAGE,
                    seed: int = EVAL_SEED) -> list[dict]:
    rows = make_preference_rows(languages, per_language, seed, topics=HELDOUT_TOPICS)
    for row in rows:
        row["id"] = f"eval-{row['id']}"
        del row["flipped"]
    return rows


def make_eval_prompts(languages: Iterable[str] = DEFAULT_LANGUAGES) -> list[dict]:
    """Every question template × held-out topic, templates outermost (the first few rows of a language
    already cover every topic)."""
    rows = []
    for language in languages:
        t = load_templates()[language]
        pairs = [(template, topic) for template in t.prompts for topic in HELDOUT_TOPICS]
        for k, (template, topic) in enumerate(pairs):
            rows.append({"id": f"eval-{language}-p{k:02d}", "language": language,
                         "prompt": template.format(topic=t.topics[topic][0])})
    return rows


def make_reference_texts(languages: Iterable[str] = DEFAULT_LANGUAGES) -> list[dict]:
    """Per language and held-out topic: the fact alone, and the fact in the language's last answer
    template (a sentence around it)."""
    rows = []
    for language in languages:
        t = load_templates()[language]
        for topic in HELDOUT_TOPICS:
            fact = t.topics[topic][1]
            for k, text in enumerate((fact, t.answers[-1].format(fact=fact))):
                rows.append({"id": f"eval-{language}-{topic}-{k}", "language": language, "text": text})
    return rows


def make_multiple_choice(languages: Iterable[str] = DEFAULT_LANGUAGES, seed: int = EVAL_SEED) -> list[dict]:
    """Per language, question template × held-out topic: the four held-out facts as choices, in a seeded
    order, the topic's own fact the answer."""
    rows = []
    for language in languages:
        rng = random.Random(f"{seed}:{language}:mc")
        t = load_templates()[language]
        facts = [t.topics[topic][1] for topic in HELDOUT_TOPICS]
        for k, (template, topic) in enumerate((p, topic) for p in t.prompts for topic in HELDOUT_TOPICS):
            choices = rng.sample(facts, len(facts))
            rows.append({"id": f"eval-{language}-mc{k:02d}", "language": language,
                         "question": template.format(topic=t.topics[topic][0]), "choices": choices,
                         "answer": choices.index(t.topics[topic][1])})
    return rows


# ---- reading -----------------------------------------------------------------------------------------
def load_reference_texts(path: str | Path, languages: Iterable[str] | None = None) -> list[ReferenceText]:
    """Rows ``text``, ``language``, optional ``id``; a bad row is an error naming file, row and field."""
    out = []
    for index, row_n, raw in _rows(path):
        row = ReferenceText(formats.parse_id(raw, index, str(path), row=row_n),
                            _string(raw, "text", row_n, path), formats.parse_language(raw, row_n, str(path)))
        out.append(row)
    return _only(out, languages, path)


def load_multiple_choice(path: str | Path, languages: Iterable[str] | None = None) -> list[MultipleChoice]:
    """Rows ``question``, ``choices`` (two or more strings), ``answer`` (an index into them), ``language``,
    optional ``id``."""
    out = []
    for index, row_n, raw in _rows(path):
        choices = raw.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise BadRowError(str(path), row_n, "choices", "expected a list of two or more non-empty strings")
        answer = raw.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise BadRowError(str(path), row_n, "answer", f"expected an index into choices (0..{len(choices) - 1})")
        out.append(MultipleChoice(formats.parse_id(raw, index, str(path), row=row_n),
                                  _string(raw, "question", row_n, path), tuple(choices), answer,
                                  formats.parse_language(raw, row_n, str(path))))
    return _only(out, languages, path)


def _rows(path: str | Path):
    """``(index, row number as messages show it, raw row)``: the number is the line of a JSON-lines file."""
    if not Path(path).exists():
        raise CongradError(f"{path}: file not found")
    for index, (row_n, raw) in enumerate(formats.read_numbered_rows(str(path), "train")):
        if isinstance(raw, formats.BadLine):
            raise BadRowError(str(path), row_n, formats.ROW, raw.reason)
        if not isinstance(raw, dict):
            raise BadRowError(str(path), row_n, formats.ROW, "expected a JSON object")
        yield index, row_n, raw


def _string(raw: dict, name: str, index: int, path) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRowError(str(path), index, name, "expected a non-empty string")
    return value


def _only(rows: list, languages: Iterable[str] | None, path) -> list:
    if languages is not None:
        wanted = set(languages)
        rows = [row for row in rows if row.language in wanted]
    if not rows:
        raise CongradError(f"{path}: no rows{' for the evaluated languages' if languages is not None else ''}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the shipped evaluation sets (held-out topics).")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    args = parser.parse_args(argv)
    sets = {"pairs.jsonl": make_eval_pairs(args.languages), "prompts.jsonl": make_eval_prompts(args.languages),
            "reference_texts.jsonl": make_reference_texts(args.languages),
            "multiple_choice.jsonl": make_multiple_choice(args.languages)}
    for name, rows in sets.items():
        write_jsonl(args.out / name, rows)
        print(f"wrote {len(rows)} rows in {len(args.languages)} languages to {args.out / name}")


if __name__ == "__main__":
    main()
