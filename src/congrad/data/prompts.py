"""Prompts for self-rewarding generation and for the win rate.

A prompt row is ``prompt`` (a string, or TRL's conversational form: ``system``/``user`` messages),
``language``, an optional ``id`` and, for the win rate, an optional ``reference`` answer; read from any source
(:mod:`congrad.data.sources`: a file, a ``datasets`` folder, a hub id, a set split by language, with
``columns``) and validated as every row kind is (:func:`congrad.data.formats.load_rows`).

``python -m congrad.data.prompts`` writes the shipped tiny set (``data/prompts_tiny.jsonl``):
every prompt template × topic of :mod:`congrad.data.synthetic`, in all of its languages.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field

from congrad.data.formats import PROMPTS, Languages, LoadReport, Prompt, load_rows
from congrad.data.sources import Source, SourceSettings
from congrad.data.synthetic import DEFAULT_LANGUAGES, TOPICS, load_templates
from congrad.errors import ConfigError
from congrad.utils.io import write_jsonl
from congrad.utils.schema import FreeForm, Text

SHIPPED_PATH = Path("data/prompts_tiny.jsonl")

log = logging.getLogger(__name__)


class PromptPoolSettings(SourceSettings):
    """``self_reward.prompts``: the pool (a source), the languages drawn from it, each iteration's share
    (:func:`iteration_slices`), and ``rows``: the pool's known sizes by language (``all``: in total), which the
    plan reads instead of opening a hub set."""

    group: ClassVar[str] = "self_reward.prompts"
    path: Text
    languages: Languages | None
    per_iteration: Annotated[int, Field(ge=1)] | None
    rows: FreeForm

def read_prompts(path: str, *, languages: Iterable[str] | str | None = None, setting: str = "self_reward.prompts",
                 **options: Any) -> tuple[list[Prompt], LoadReport]:
    """Validated prompts of ``languages`` (``None``: all) and the load report; ``options``: the
    :class:`~congrad.data.sources.Source` settings (``per_language``, ``split``, ``on_bad_row``, ``columns``,
    ...; other keys of a config section, such as ``per_iteration``, are left to their reader)."""
    prompts, report = load_rows(PROMPTS, Source.from_config({**options, "path": path}, setting), languages)
    if report.skipped:
        log.warning("%s: skipped %d bad prompt rows (%s)", report.source, report.skipped,
                    ", ".join(f"{reason}: {n}" for reason, n in report.skipped_by_reason.items()))
    return prompts, report


def load_prompts(path: str, **options: Any) -> list[Prompt]:
    """:func:`read_prompts` without the report."""
    return read_prompts(path, **options)[0]


def iteration_slices(prompts: list[Prompt], per_iteration: int | None, iterations: int, seed: int,
                     setting: str = "self_reward.prompts.per_iteration") -> list[list[Prompt]]:
    """The prompts of each of ``iterations`` iterations: every prompt in each (``per_iteration`` None), or
    disjoint slices of ``per_iteration`` prompts per language, cut from the language's prompts shuffled by
    ``seed`` (the same slices in a resumed run), each slice in pool order. A language with too few prompts for
    every iteration is an error naming it."""
    if per_iteration is None:
        return [list(prompts)] * iterations
    by_language: dict[str, list[int]] = {}
    for position, prompt in enumerate(prompts):
        by_language.setdefault(prompt.language, []).append(position)
    short = {lang: len(pos) for lang, pos in by_language.items() if len(pos) < per_iteration * iterations}
    if short:
        raise ConfigError(f"{setting}={per_iteration}: {iterations} iterations need {per_iteration * iterations} "
                          "prompts per language; the pool has " + ", ".join(f"{n} in {lang}" for lang, n in
                                                                            sorted(short.items())))
    order = {lang: random.Random(f"{seed}:{lang}").sample(pos, len(pos)) for lang, pos in by_language.items()}
    slices = []
    for t in range(iterations):
        taken = {i for pos in order.values() for i in pos[t * per_iteration:(t + 1) * per_iteration]}
        slices.append([prompts[i] for i in sorted(taken)])
    return slices


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
