"""A small multilingual preference set generated from hand-written per-language text tables
(``data/templates/<code>.json``: a system prompt, question templates, answer templates, refusals, off-topic
sentences, and a noun phrase and a one-sentence fact per topic).

Every language answers the same six science questions. ``chosen`` is a short, correct answer in the
prompt's language; ``rejected`` is one of four realistic failure modes:

- ``wrong_language``: a correct answer, but in another language (English, or for English prompts another
  language) — the language confusion that multilingual alignment must fix;
- ``refusal``: an unhelpful refusal;
- ``off_topic``: fluent text that ignores the question;
- ``repetition``: the first words of the answer, repeated (degenerate decoding).

A known share of pairs can be flipped (chosen and rejected swapped, ``"flipped": true``) in chosen
languages, which plants conflicting preference signal for benchmarks of the filter.

Languages can also be given opposite but internally consistent style rules (``style``: ``verbose`` or
``concise`` per language): every chosen answer of such a language is written with its longest answer
template (``verbose``: e.g. "Good question! {fact} I hope this helps.") or its shortest (``concise``: the
fact alone), and a share of its pairs (``style_share``) contrast the two styles of the same correct
answer (``"contrast": "style"``) instead of a correct answer against a failure mode (``"quality"``). Two
groups of languages with opposite rules make a set whose languages really disagree; flips then fall on
quality pairs only, so a flipped pair is mislabelled by every language's rule.

``python -m congrad.data.synthetic --out data/tiny_multilingual.jsonl`` writes the shipped file.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from congrad.data.languages import is_iso_639_1
from congrad.errors import CongradError
from congrad.utils.io import write_jsonl
from congrad.utils.project import project_root

TOPICS = ("photosynthesis", "rainbow", "water_cycle", "volcano", "gravity", "vaccine")
"""The topics of the training sets (``topics`` in a text table)."""
HELDOUT_TOPICS = ("earthquake", "lightning", "fossil", "solar_eclipse")
"""The topics of the evaluation sets (``heldout_topics`` in a text table), never in a training set."""
FAILURE_MODES = ("wrong_language", "refusal", "off_topic", "repetition")
STYLES = ("verbose", "concise")
"""The style rules a language can be given: the chosen answer uses the longest / the shortest answer template."""
CONVERSATIONAL_SHARE = 0.25
DEFAULT_PAIRS_PER_LANGUAGE = 40
SHIPPED_PATH = Path("data/tiny_multilingual.jsonl")

DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "pt", "ru", "zh", "ja", "ar", "hi", "ko")
"""The languages of the shipped sets, in the order the generator draws from them (it matters: a wrong-language
rejected answer is drawn from this list)."""

TABLE_FIELDS = ("language", "spaced", "system", "prompts", "answers", "refusals", "off_topic", "topics",
                "heldout_topics")


@dataclass(frozen=True)
class LanguageTemplates:
    """The text of one language, read from ``data/templates/<code>.json``.

    ``prompts`` contain a ``{topic}`` slot, filled with the topic's noun phrase, which is written in the
    grammatical form every prompt of that language needs (so no inflection happens in code).
    ``answers`` contain a ``{fact}`` slot, filled with the topic's one-sentence explanation.
    """

    system: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    refusals: tuple[str, ...]
    off_topic: tuple[str, ...]
    topics: dict[str, tuple[str, str]]  # topic key -> (noun phrase, fact), training and held-out topics
    spaced: bool = True  # words separated by spaces (False for Chinese and Japanese)


def tables_dir() -> Path:
    return project_root() / "data" / "templates"


@lru_cache(maxsize=1)
def load_templates() -> dict[str, LanguageTemplates]:
    """Every ``data/templates/<code>.json``, validated: the languages of :data:`DEFAULT_LANGUAGES` first, in
    that order, then any other file (sorted). Adding a language is adding a file."""
    directory = tables_dir()
    files = {path.stem: path for path in directory.glob("*.json")}
    missing = [code for code in DEFAULT_LANGUAGES if code not in files]
    if missing:
        raise CongradError(f"{directory}: no text table for language(s) {', '.join(missing)}")
    order = [*DEFAULT_LANGUAGES, *sorted(set(files) - set(DEFAULT_LANGUAGES))]
    return {code: _read_table(files[code]) for code in order}


def _read_table(path: Path) -> LanguageTemplates:
    def bad(field: str, reason: str) -> CongradError:
        return CongradError(f"{path}: field '{field}': {reason}")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CongradError(f"{path}: not a UTF-8 JSON file ({err})") from None
    if not isinstance(raw, dict):
        raise bad("<file>", "expected a JSON object")
    unknown = sorted(set(raw) - set(TABLE_FIELDS))
    if unknown:
        raise bad(unknown[0], f"unknown field (the fields are {', '.join(TABLE_FIELDS)})")
    if raw.get("language") != path.stem or not is_iso_639_1(path.stem):
        raise bad("language", f"must be the file's own ISO 639-1 code {path.stem!r}, got {raw.get('language')!r}")
    if not isinstance(raw.get("spaced"), bool):
        raise bad("spaced", "expected true or false")
    if not _is_text(raw.get("system")):
        raise bad("system", "expected a non-empty string")
    lists = {}
    for name, slot in (("prompts", "{topic}"), ("answers", "{fact}"), ("refusals", None), ("off_topic", None)):
        values = raw.get(name)
        if not isinstance(values, list) or not values or not all(_is_text(v) for v in values):
            raise bad(name, "expected a non-empty list of non-empty strings")
        for value in values:
            if slot is not None and value.count(slot) != 1:
                raise bad(name, f"every entry needs the slot {slot} exactly once: {value!r}")
        lists[name] = tuple(values)
    topics = {}
    for name, keys in (("topics", TOPICS), ("heldout_topics", HELDOUT_TOPICS)):
        entries = raw.get(name)
        if not isinstance(entries, dict) or set(entries) != set(keys):
            raise bad(name, f"expected exactly the topics {', '.join(keys)}")
        for key in keys:
            entry = entries[key]
            if not isinstance(entry, dict) or set(entry) != {"phrase", "fact"} or not all(map(_is_text, entry.values())):
                raise bad(f"{name}.{key}", "expected {\"phrase\": ..., \"fact\": ...} with non-empty strings")
            topics[key] = (entry["phrase"], entry["fact"])
    return LanguageTemplates(system=raw["system"], **lists, spaced=raw["spaced"], topics=topics)


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def template_texts() -> list[str]:
    """Every sentence the generator can emit, in a fixed order: the corpus of the tiny tokenizer."""
    texts = []
    for t in load_templates().values():
        texts.append(t.system)
        for phrase, fact in t.topics.values():
            texts.extend(p.format(topic=phrase) for p in t.prompts)
            texts.extend(a.format(fact=fact) for a in t.answers)
        texts.extend(t.refusals)
        texts.extend(t.off_topic)
    return texts


def make_preference_rows(
    languages: Iterable[str] = DEFAULT_LANGUAGES,
    pairs_per_language: int = DEFAULT_PAIRS_PER_LANGUAGE,
    seed: int = 0,
    flip_fraction: float = 0.0,
    flip_languages: Iterable[str] | None = None,
    topics: Iterable[str] = TOPICS,
    style: dict[str, str] | None = None,
    style_share: float = 0.0,
) -> list[dict]:
    """Preference rows in the preference-data format (``id``, ``prompt``, ``chosen``, ``rejected``,
    ``language``) plus ``flipped``, grouped by language in the order given.

    Each language draws from its own random stream (seeded by ``seed`` and the language code), so a
    language's rows do not depend on which other languages are requested. About a quarter of the rows
    use TRL's conversational form (a system and a user message as prompt, one assistant message per
    completion). In each language of ``flip_languages`` (``None``: every language) exactly
    ``round(flip_fraction * pairs_per_language)`` rows, chosen at random, have chosen and rejected swapped.
    ``topics``: :data:`TOPICS` for training sets, :data:`HELDOUT_TOPICS` for evaluation sets.
    ``style``: a language -> ``verbose`` | ``concise`` rule for some languages (module docstring); in those,
    ``round(style_share * pairs_per_language)`` rows contrast the two styles, their rows carry ``contrast``,
    and flips fall on the other (quality) rows only. Languages without a rule are generated as without
    ``style`` (the same rows, byte for byte).
    """
    languages = list(languages)
    templates = load_templates()
    unknown = sorted(set(languages) - set(templates))
    if unknown:
        raise CongradError(f"no text table for languages {unknown} in {tables_dir()}; available: {sorted(templates)}")
    if not 0.0 <= flip_fraction <= 1.0:
        raise CongradError(f"flip_fraction must be in [0, 1], got {flip_fraction}")
    style = dict(style or {})
    bad_style = sorted(f"{code}={rule}" for code, rule in style.items() if rule not in STYLES)
    if bad_style:
        raise CongradError(f"style rules must be {' or '.join(STYLES)}, got {', '.join(bad_style)}")
    if not 0.0 <= style_share <= 1.0:
        raise CongradError(f"style_share must be in [0, 1], got {style_share}")
    flipped_in = set(languages if flip_languages is None else flip_languages)
    rows = []
    for language in languages:
        language_rows = _language_rows(language, pairs_per_language, seed, tuple(topics),
                                       style.get(language), style_share)
        if language in flipped_in:
            _flip(
                [row for row in language_rows if row.get("contrast") != "style"],
                round(flip_fraction * pairs_per_language),
                random.Random(f"{seed}:{language}:flip"),
            )
        rows.extend(language_rows)
    return rows


def _language_rows(language: str, n: int, seed: int, topics: tuple[str, ...], style: str | None = None,
                   style_share: float = 0.0) -> list[dict]:
    rng = random.Random(f"{seed}:{language}")
    t = load_templates()[language]
    combos = [(topic, prompt) for topic in topics for prompt in t.prompts]
    order: list[tuple[str, str]] = []
    while len(order) < n:  # every (topic, prompt) once before any repeats
        order.extend(rng.sample(combos, len(combos)))
    # the style rows come from a stream of their own, so the draws below are those of a language without a rule
    style_rng = random.Random(f"{seed}:{language}:style")
    style_rows = set(style_rng.sample(range(n), round(style_share * n))) if style else set()
    by_length = sorted(t.answers, key=len)
    preferred, other = (by_length[-1], by_length[0]) if style == "verbose" else (by_length[0], by_length[-1])
    rows = []
    for k, (topic, prompt_template) in enumerate(order[:n]):
        phrase, fact = t.topics[topic]
        prompt = prompt_template.format(topic=phrase)
        chosen = rng.choice(t.answers).format(fact=fact)
        rejected = _rejected(language, topic, rng.choice(FAILURE_MODES), rng)
        extra = {}
        if style:
            chosen = preferred.format(fact=fact)
            if k in style_rows:
                rejected = other.format(fact=fact)
            extra = {"contrast": "style" if k in style_rows else "quality"}
        if rng.random() < CONVERSATIONAL_SHARE:
            prompt = [{"role": "system", "content": t.system}, {"role": "user", "content": prompt}]
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        rows.append(
            {
                "id": f"{language}-{k:04d}",
                "language": language,
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "flipped": False,
                **extra,
            }
        )
    return rows


def _rejected(language: str, topic: str, mode: str, rng: random.Random) -> str:
    t = load_templates()[language]
    if mode == "wrong_language":
        templates = load_templates()
        others = [code for code in templates if code not in (language, "en")]
        other = "en" if language != "en" and rng.random() < 0.5 else rng.choice(others)
        return rng.choice(templates[other].answers).format(fact=templates[other].topics[topic][1])
    if mode == "refusal":
        return rng.choice(t.refusals)
    if mode == "off_topic":
        return rng.choice(t.off_topic)
    fact = t.topics[topic][1]
    if t.spaced:
        fragment = " ".join(fact.split()[:4]).rstrip(",.;:،—")
        return " ".join([fragment] * 6)
    return fact[:6] * 6


def _flip(rows: list[dict], count: int, rng: random.Random) -> None:
    for row in rng.sample(rows, count):
        row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
        row["flipped"] = True


def style_rules(verbose: Iterable[str], concise: Iterable[str]) -> dict[str, str]:
    """The ``style`` argument of :func:`make_preference_rows` from two lists of languages."""
    verbose, concise = list(verbose), list(concise)
    both = sorted(set(verbose) & set(concise))
    if both:
        raise CongradError(f"languages {', '.join(both)} are given both style rules")
    return {**{code: "verbose" for code in verbose}, **{code: "concise" for code in concise}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_PATH)
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    parser.add_argument("--pairs-per-language", type=int, default=DEFAULT_PAIRS_PER_LANGUAGE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip-fraction", type=float, default=0.0)
    parser.add_argument("--flip-languages", nargs="*", default=None, help="default: every language")
    parser.add_argument("--verbose-languages", nargs="*", default=[], help="languages whose rule is 'verbose'")
    parser.add_argument("--concise-languages", nargs="*", default=[], help="languages whose rule is 'concise'")
    parser.add_argument("--style-share", type=float, default=0.0, help="share of style-contrast pairs in them")
    args = parser.parse_args(argv)
    rows = make_preference_rows(
        args.languages, args.pairs_per_language, args.seed, args.flip_fraction, args.flip_languages,
        style=style_rules(args.verbose_languages, args.concise_languages), style_share=args.style_share,
    )
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} pairs in {len(args.languages)} languages to {args.out}")


if __name__ == "__main__":
    main()
