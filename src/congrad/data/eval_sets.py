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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from congrad.data.formats import MULTIPLE_CHOICE, REFERENCE_TEXTS, MultipleChoice, ReferenceText, RowKind, load_rows
from congrad.data.sources import Source
from congrad.errors import ConfigError
from congrad.data.synthetic import DEFAULT_LANGUAGES, HELDOUT_TOPICS, load_templates, make_preference_rows, style_rules
from congrad.utils.io import write_jsonl

SHIPPED_DIR = Path("data/eval")
EVAL_SEED = 1000  # the training sets use seed 0
PAIRS_PER_LANGUAGE = 16
SET_NAMES = ("pairs", "prompts", "reference_texts", "multiple_choice")


# ---- generation of the shipped sets ---------------------------------------------------------------
def make_eval_pairs(languages: Iterable[str] = DEFAULT_LANGUAGES, per_language: int = PAIRS_PER_LANGUAGE,
                    seed: int = EVAL_SEED, **style) -> list[dict]:
    """Held-out pairs; ``style`` (``style``, ``style_share``) as in :func:`make_preference_rows`, for the
    held-out side of a set whose languages follow opposite style rules."""
    rows = make_preference_rows(languages, per_language, seed, topics=HELDOUT_TOPICS, **style)
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
def load_reference_texts(path: str | Path, languages: Iterable[str] | None = None, setting: str = "eval.nll",
                         **options: Any) -> list[ReferenceText]:
    """Rows ``text``, ``language``, optional ``id`` (``options``: ``columns`` and the other
    :class:`~congrad.data.sources.Source` settings); a bad row is an error naming file, row and field."""
    return _load(REFERENCE_TEXTS, path, languages, setting, options)


def load_multiple_choice(path: str | Path, languages: Iterable[str] | None = None, setting: str = "eval.harness.files",
                         **options: Any) -> list[MultipleChoice]:
    """Rows ``question``, ``choices`` (two or more strings; ``columns.choices`` may list the fields that hold
    them, e.g. ``[option_a, option_b, option_c, option_d]``), ``answer`` (an index into them, a letter or a
    1-based string), ``language``, optional ``id``. Only rows of ``languages`` are kept; none at all is an error."""
    return _load(MULTIPLE_CHOICE, path, languages, setting, options)


def _load(kind: RowKind, path, languages, setting: str, options: dict) -> list:
    return read_eval_part(kind, {**options, "path": str(path)}, setting, languages)


def read_eval_part(kind: RowKind, section: Mapping[str, Any], setting: str, languages: Iterable[str] | None) -> list:
    """The rows of one evaluation part, config section ``setting`` (a data source: docs/data.md, "Data sources"), in
    ``languages`` (``eval.languages``; None: all). A section's own ``languages`` are the ones the set has (a set
    split by language: its parts); with both, their overlap is read, and none is an error."""
    source = Source.from_config(section, setting)
    own = section.get("languages")
    wanted = list(own) if own is not None else languages
    if own is not None and languages is not None:
        wanted = [code for code in own if code in set(languages)]
        if not wanted:
            raise ConfigError(f"{setting}.languages: none of eval.languages ({', '.join(languages)}) is among the "
                              f"set's languages ({', '.join(own)})")
    return load_rows(kind, source, wanted, require_languages=source.split_by_language)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the shipped evaluation sets (held-out topics).")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    parser.add_argument("--sets", nargs="+", choices=SET_NAMES, default=list(SET_NAMES), help="default: all four")
    parser.add_argument("--verbose-languages", nargs="*", default=[], help="pairs: languages whose rule is 'verbose'")
    parser.add_argument("--concise-languages", nargs="*", default=[], help="pairs: languages whose rule is 'concise'")
    parser.add_argument("--style-share", type=float, default=0.0, help="pairs: share of style-contrast pairs in them")
    args = parser.parse_args(argv)
    style = {"style": style_rules(args.verbose_languages, args.concise_languages), "style_share": args.style_share}
    makers = {"pairs": lambda: make_eval_pairs(args.languages, **style),
              "prompts": lambda: make_eval_prompts(args.languages),
              "reference_texts": lambda: make_reference_texts(args.languages),
              "multiple_choice": lambda: make_multiple_choice(args.languages)}
    sets = {f"{name}.jsonl": makers[name]() for name in args.sets}
    for name, rows in sets.items():
        write_jsonl(args.out / name, rows)
        print(f"wrote {len(rows)} rows in {len(args.languages)} languages to {args.out / name}")


if __name__ == "__main__":
    main()
