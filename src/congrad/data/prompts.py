"""Prompts for self-rewarding generation.

A prompt row is ``prompt`` (a string, or TRL's conversational form: ``system``/``user`` messages),
``language`` (ISO 639-1) and an optional ``id``, read from the same sources as preference data (JSON
lines, Parquet, a saved ``datasets`` directory or a hub id) and validated the same way: a bad row is an
error naming the file, the row and the field, or with ``on_bad_row=skip`` it is skipped (and logged).

``python -m congrad.data.prompts`` writes the shipped tiny set (``data/prompts_tiny.jsonl``):
every prompt template × topic of :mod:`congrad.data.synthetic`, in all of its languages.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from congrad.data import formats
from congrad.data.formats import Text
from congrad.data.synthetic import DEFAULT_LANGUAGES, TOPICS, load_templates
from congrad.errors import BadRowError, CongradError
from congrad.utils.io import write_jsonl

SHIPPED_PATH = Path("data/prompts_tiny.jsonl")
PROMPT_ROLES = ("system", "user")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    id: str
    prompt: Text
    language: str


def load_prompts(
    path: str,
    *,
    languages: Iterable[str] | None = None,
    per_language: int | None = None,
    split: str = "train",
    on_bad_row: str = "error",
) -> list[Prompt]:
    """Validated prompts of ``languages`` (``None``: all), the first ``per_language`` of each (``None``:
    all), in input order. A requested language without prompts is an error."""
    if on_bad_row not in formats.ON_BAD_ROW:
        raise CongradError(f"on_bad_row must be one of {', '.join(formats.ON_BAD_ROW)}, got {on_bad_row!r}")
    wanted = None if languages is None else set(formats.requested_languages(languages))
    prompts: list[Prompt] = []
    taken: Counter[str] = Counter()
    present: set[str] = set()  # languages of every valid prompt, wanted or not
    first_row_of_id: dict[str, int] = {}
    skipped = 0
    for index, (label, raw) in enumerate(formats.read_numbered_rows(str(path), split)):
        try:
            prompt = _parse(raw, index, str(path), label)
            if prompt.id in first_row_of_id:
                raise BadRowError(str(path), label, "id", f"duplicate of row {first_row_of_id[prompt.id]}")
        except BadRowError:
            if on_bad_row == "error":
                raise
            skipped += 1
            continue
        first_row_of_id[prompt.id] = label
        present.add(prompt.language)
        if wanted is not None and prompt.language not in wanted:
            continue
        if per_language is not None and taken[prompt.language] >= per_language:
            continue
        taken[prompt.language] += 1
        prompts.append(prompt)
    if skipped:
        log.warning("%s: skipped %d bad prompt rows", path, skipped)
    missing = sorted((wanted or set()) - set(taken))
    if missing:
        raise CongradError(f"{path}: no prompts for language(s) {', '.join(missing)}; "
                           f"present: {', '.join(sorted(present)) or 'none'}")
    if not prompts:
        raise CongradError(f"{path}: no usable prompts")
    return prompts


def _parse(raw, index: int, source: str, label: int) -> Prompt:
    """The ``index``-th prompt row; errors name it by ``label`` (its line in a JSON-lines file)."""
    if isinstance(raw, formats.BadLine):
        raise BadRowError(source, label, formats.ROW, raw.reason)
    if not isinstance(raw, dict):
        raise BadRowError(source, label, formats.ROW, "expected a JSON object")
    return Prompt(
        id=formats.parse_id(raw, index, source, row=label),
        prompt=formats.parse_text(raw, "prompt", label, source, roles=PROMPT_ROLES),
        language=formats.parse_language(raw, label, source),
    )


def make_prompt_rows(languages: Iterable[str] = DEFAULT_LANGUAGES) -> list[dict]:
    """One row per (prompt template, topic) of each language, templates outermost, so that the first
    ``len(TOPICS)`` rows of a language already cover every topic."""
    rows = []
    for language in languages:
        t = load_templates()[language]
        for k, (template, topic) in enumerate((p, topic) for p in t.prompts for topic in TOPICS):
            rows.append({"id": f"{language}-{k:03d}", "language": language,
                         "prompt": template.format(topic=t.topics[topic][0])})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tiny multilingual prompt set.")
    parser.add_argument("--out", type=Path, default=SHIPPED_PATH)
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    args = parser.parse_args(argv)
    rows = make_prompt_rows(args.languages)
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} prompts in {len(args.languages)} languages to {args.out}")


if __name__ == "__main__":
    main()
