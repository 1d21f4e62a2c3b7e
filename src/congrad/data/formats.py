"""Reading and validating rows of every kind (docs/data.md), from any :class:`~congrad.data.sources.Source`.

One loader, :func:`load_rows`, serves every row kind: preference pairs (:data:`PREFERENCE`: training data and
held-out pairs), prompts with an optional reference answer (:data:`PROMPTS`), reference texts
(:data:`REFERENCE_TEXTS`) and multiple-choice questions (:data:`MULTIPLE_CHOICE`). Each field is read from the
row itself or from the source's field that ``columns`` names (dotted for nested values, ``messages.0.content``);
the language from a field, a constant for the whole source, or the part of a set split by language, normalised
to ISO 639-1 (:mod:`congrad.data.languages`). A bad row is a :class:`BadRowError` naming the file, the row and
the field, or with ``on_bad_row="skip"`` a counted, reported skip (:class:`LoadReport`); duplicate ids are bad
rows; a language asked for without rows is an error.

A preference row is ``prompt``, ``chosen``, ``rejected`` (each a string, or TRL's conversational form: a list of
``{"role", "content"}`` messages), ``language`` and an optional ``id``; any other field passes through untouched
in :attr:`PreferenceRow.raw`. Without a ``prompt``, ``chosen`` and ``rejected`` are read as TRL reads its
implicit-prompt format (``trl.data_utils.maybe_extract_prompt``): their shared beginning is the prompt.

Two numbers identify a row. ``index`` is its position among the rows read, from 0 in input order (blank lines of
a JSON-lines file are not rows): the key every other part of congrad uses. ``source_row`` is what the user sees
in every message and report ("row N"; :mod:`congrad.data.sources`).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from congrad.data.languages import FORMS, is_iso_639_1, normalize_language
from congrad.data.sources import ROW, BadLine, Part, Source, SourceSettings, parts
from congrad.errors import BadRowError, ConfigError, CongradError
from congrad.utils.schema import checked

Messages = list[dict[str, Any]]
Text = str | Messages

ROLES = ("system", "user", "assistant")
PROMPT_ROLES = ("system", "user")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---- the rows ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreferenceRow:
    """One validated preference pair."""

    index: int  # position in the input, from 0
    id: str  # the row's ``id`` as a string, else ``str(index)``
    prompt: Text
    chosen: Text  # in conversational form: the assistant turn(s) only
    rejected: Text
    language: str
    raw: dict  # the row exactly as read, for writing kept rows back out unchanged
    source_row: int | None = None  # "row N" of messages and reports (module docstring); None: ``index``

    @property
    def label(self) -> int:
        """The row's number as messages and reports show it."""
        return self.index if self.source_row is None else self.source_row


@dataclass(frozen=True)
class Prompt:
    """A prompt for generation; ``reference``: an answer to compare the policy's with (win rate against it)."""

    id: str
    prompt: Text
    language: str
    reference: str | None = None


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
    answer: int  # index into choices
    language: str


@dataclass
class LoadReport:
    """What happened to every input row: loaded, skipped as bad, excluded by language, filtered by length or
    over the per-language cap (and, once tokenized by the datamodule, truncated)."""

    source: str
    total_rows: int = 0
    loaded: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # "<field>: <reason>" -> count
    # {"row", "id", "language", "field", "reason"} each; "row" as messages show it (module docstring)
    skipped_rows: list[dict] = field(default_factory=list)
    excluded_by_language: int = 0
    excluded_rows: list[dict] = field(default_factory=list)  # {"row", "id", "language"} of each excluded row
    filtered_by_length: dict[str, int] = field(default_factory=dict)  # "shorter than N" / "longer than N" -> count
    capped_by_language: dict[str, int] = field(default_factory=dict)  # rows over per_language, per language
    loaded_by_language: dict[str, int] = field(default_factory=dict)
    # filled by the datamodule: pairs whose prompt / chosen / rejected truncation cut (overall, by language)
    truncated: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ---- one raw row, seen through the source's settings ---------------------------------------------------------
class RowView:
    """A raw row of one part of a source: its fields by our names (through ``columns``), errors that name the
    row and the source's field, and the row's language."""

    def __init__(self, raw: dict, index: int, label: int, part: Part, wanted: set[str] | None,
                 constant_language: str | None):
        self.raw, self.index, self.label, self.part = raw, index, label, part
        self.columns = part.source.columns
        self.wanted, self.constant_language = wanted, constant_language

    def field_name(self, name: str) -> str:
        """The source's field that holds our field ``name``."""
        mapped = self.columns.get(name, name)
        return mapped if isinstance(mapped, str) else name

    def get(self, name: str) -> Any:
        """Our field ``name``: the source's field ``columns[name]`` (dotted: nested), else the field itself."""
        mapped = self.columns.get(name, name)
        if isinstance(mapped, (list, tuple)):
            return [_nested(self.raw, str(path)) for path in mapped]
        return _nested(self.raw, str(mapped))

    def error(self, name: str, reason: str) -> BadRowError:
        return BadRowError(self.part.label, self.label, self.field_name(name), reason)

    def language(self) -> str | None:
        """The row's ISO 639-1 code; None for a row of a language outside ``wanted`` that has no ISO 639-1 code
        (excluded like any other language not asked for)."""
        if "language" not in self.columns:
            if self.constant_language is not None:
                return self.constant_language
            if self.part.language is not None:
                return self.part.language
        value = self.get("language")
        if value is None:
            raise self.error("language", "missing")
        if not isinstance(value, str):
            raise self.error("language", f"expected a string, got {type(value).__name__}")
        if not value:
            raise self.error("language", "empty string")
        found = normalize_language(value)
        setting = self.part.source.setting
        if found is None:
            raise self.error("language", (
                f"unknown language {value!r} (expected {FORMS}); give the language of the whole source with "
                f"{setting}.language, or the field that holds it with {setting}.columns.language"))
        if found.code is None:
            if self.wanted is not None:
                return None
            raise self.error("language", (
                f"language {value!r} ({found.name}) has no ISO 639-1 code, by which congrad names languages: "
                f"select the languages to read with {setting}.languages"))
        return found.code


def _nested(raw: dict, path: str) -> Any:
    """``raw[a][b][0]`` for ``"a.b.0"``; None when any step is missing (a field that is itself named with dots
    is found first)."""
    if path in raw:
        return raw[path]
    value: Any = raw
    for step in path.split("."):
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.lstrip("-").isdigit() and -len(value) <= int(step) < len(value):
            value = value[int(step)]
        else:
            return None
        if value is None:
            return None
    return value


# ---- fields -----------------------------------------------------------------------------------------------
def parse_text(view: RowView, name: str, roles: tuple[str, ...], value: Any = None) -> Text:
    """Field ``name``: a non-blank string, or a non-empty list of messages with these roles (``value``: the
    field's value when already read)."""
    value = view.get(name) if value is None else value
    if value is None:
        raise view.error(name, "missing")
    if isinstance(value, str):
        if not value:
            raise view.error(name, "empty string")
        if not value.strip():
            raise view.error(name, "blank string")
        return value
    if isinstance(value, list):
        if not value:
            raise view.error(name, "empty message list")
        for message in value:
            problem = _message_problem(message, roles)
            if problem:
                raise view.error(name, problem)
        if not any(message["content"].strip() for message in value):
            raise view.error(name, "all message contents are blank")
        return value
    raise view.error(name, f"expected a string or a list of messages, got {type(value).__name__}")


def _message_problem(message: Any, roles: tuple[str, ...]) -> str | None:
    if not isinstance(message, dict):
        return "message is not an object with 'role' and 'content'"
    role = message.get("role")
    if not isinstance(role, str) or not role:
        return "message without a 'role' string"
    if role not in roles:
        return f"message role {role!r} is not one of {', '.join(roles)}"
    if not isinstance(message.get("content"), str):
        return "message without a 'content' string"
    return None


def check_a_preference(view: RowView, chosen: Text, rejected: Text) -> None:
    """A pair must prefer one answer to another: ``chosen`` and ``rejected`` that are the same text (a string
    is one assistant turn, as the tokenizer renders it) make a row without a preference, whose DPO gradient
    is zero and whose ConGrad score would be rounding noise."""
    if _turns(chosen) == _turns(rejected):
        raise view.error("rejected", "identical to chosen: a pair without a preference")


def _turns(text: Text) -> list[tuple[str, str]]:
    return [("assistant", text)] if isinstance(text, str) else [(m["role"], m["content"]) for m in text]


def parse_string(view: RowView, name: str) -> str:
    value = view.get(name)
    if value is None:
        raise view.error(name, "missing")
    if not isinstance(value, str) or not value.strip():
        raise view.error(name, "expected a non-empty string")
    return value


def parse_id(view: RowView) -> str:
    """The row's ``id`` as a string (a string or an integer in the data); the row index when absent. In a set
    split by language the language comes first (``de-17``): the parts' ids repeat across languages."""
    value = view.get("id")
    if value is None:
        value = view.index if view.part.language is None else view.label
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        raise view.error("id", f"expected a string or an integer, got {type(value).__name__}")
    elif isinstance(value, str) and not value.strip():
        raise view.error("id", "empty string")
    return str(value) if view.part.language is None else f"{view.part.language}-{value}"


def implicit_prompt(view: RowView, chosen: Any, rejected: Any) -> tuple[Text, Any, Any]:
    """``(prompt, chosen, rejected)`` of a row without a prompt, as TRL's ``extract_prompt`` splits it: the
    prompt is what both conversations (or strings) begin with; a string's shared end of a word stays with the
    completions when a space precedes it. A pair that shares no beginning, or where one side is nothing but
    it, is a bad row saying so."""
    both_lists = isinstance(chosen, list) and isinstance(rejected, list)
    if not (both_lists or (isinstance(chosen, str) and isinstance(rejected, str))):
        raise view.error("prompt", "missing")
    shared = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        shared += 1
    if shared == 0:
        raise view.error("prompt", "missing, and chosen and rejected share no beginning to take as the prompt "
                                   "(TRL's implicit-prompt format)")
    if shared == min(len(chosen), len(rejected)):
        side = "chosen" if len(chosen) == shared else "rejected"
        raise view.error(side, "no completion: it is entirely the beginning it shares with the other side "
                               "(TRL's implicit-prompt format)")
    if not both_lists and chosen[shared - 1] == " ":
        shared -= 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def parse_answer(view: RowView, choices: tuple[str, ...]) -> int:
    """The right choice's index from an index (``2``), a letter (``"C"``) or a 1-based string (``"3"``)."""
    value = view.get("answer")
    n = len(choices)
    if isinstance(value, bool) or value is None:
        raise view.error("answer", "missing" if value is None else "expected an index, a letter or a 1-based string")
    if isinstance(value, int):
        index, what = value, f"index {value}"
    elif isinstance(value, str) and value.strip().isdigit():
        index, what = int(value) - 1, f"1-based {value!r}"
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        index, what = LETTERS.index(value.strip().upper()), f"letter {value!r}"
    else:
        raise view.error("answer", f"expected an index (0..{n - 1}), a letter (A..{LETTERS[n - 1]}) or a 1-based "
                                   f"string ('1'..'{n}'), got {value!r}")
    if not 0 <= index < n:
        raise view.error("answer", f"{what} is not one of the {n} choices")
    return index


# ---- the row kinds ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowKind:
    """``noun``: how messages call the rows; ``text``: the field ``min_chars`` / ``max_chars`` measure;
    ``parse``: a raw row (as a :class:`RowView`) and its language to a row."""

    noun: str
    text: str
    parse: Callable[[RowView, str], Any]
    unique_ids: bool = True  # a repeated id is a bad row (rows are keyed by it downstream)


def _preference(view: RowView, language: str) -> PreferenceRow:
    chosen, rejected = view.get("chosen"), view.get("rejected")
    prompt = view.get("prompt")
    if prompt is None and "prompt" not in view.columns and chosen is not None and rejected is not None:
        prompt, chosen, rejected = implicit_prompt(view, chosen, rejected)
    prompt = parse_text(view, "prompt", ROLES, prompt)
    chosen = parse_text(view, "chosen", ("assistant",), chosen)
    rejected = parse_text(view, "rejected", ("assistant",), rejected)
    check_a_preference(view, chosen, rejected)
    return PreferenceRow(
        index=view.index,
        id=parse_id(view),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        language=language,
        raw=view.raw,
        source_row=view.label,
    )


def _prompt(view: RowView, language: str) -> Prompt:
    reference = view.get("reference")
    if reference is not None and (not isinstance(reference, str)):
        raise view.error("reference", f"expected a string, got {type(reference).__name__}")
    return Prompt(parse_id(view), parse_text(view, "prompt", PROMPT_ROLES), language,
                  reference if reference and reference.strip() else None)


def _reference_text(view: RowView, language: str) -> ReferenceText:
    return ReferenceText(parse_id(view), parse_string(view, "text"), language)


def _multiple_choice(view: RowView, language: str) -> MultipleChoice:
    choices = view.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise view.error("choices", "expected a list of two or more non-empty strings")
    choices = tuple(choices)
    return MultipleChoice(parse_id(view), parse_string(view, "question"), choices, parse_answer(view, choices),
                          language)


PREFERENCE = RowKind("preference rows", "prompt", _preference)
PROMPTS = RowKind("prompts", "prompt", _prompt)
# parallel sets repeat an id in every language; nothing keys these rows by it
REFERENCE_TEXTS = RowKind("reference texts", "text", _reference_text, unique_ids=False)
MULTIPLE_CHOICE = RowKind("multiple-choice questions", "question", _multiple_choice, unique_ids=False)


# ---- the loader -------------------------------------------------------------------------------------------
def load_rows(kind: RowKind, source: Source, languages: Iterable[str] | str | None = None,
              require_languages: bool = True) -> tuple[list, LoadReport]:
    """The validated rows of ``kind`` in ``source``, in input order, and what happened to every row.

    ``languages`` keeps only rows of those languages (the others are counted as excluded) and names the parts
    of a set split by language; a language asked for without rows is an error (``require_languages``), and so
    is a source without any usable row. Then at most ``source.per_language`` rows of each language are kept
    (the first ones, or a sample seeded by ``source.seed`` with ``source.sample``), in input order.
    """
    SourceSettings.check(source.setting, on_bad_row=source.on_bad_row)
    wanted = requested_languages(languages, f"{source.setting}.languages")
    constant = _constant_language(source)
    pieces = parts(source, wanted)
    report = LoadReport(source=pieces[0].label if len(pieces) == 1 else f"{source.path} ({len(pieces)} parts)")
    rows: list = []
    first_row_of_id: dict[str, str] = {}
    present: set[str] = set()  # languages of every row read, excluded or not
    for part in pieces:
        for label, raw, origin in part.rows():
            index, report.total_rows = report.total_rows, report.total_rows + 1
            try:
                view = _view(raw, index, label, part, wanted, constant)
                language = view.language()
                if language is not None:
                    present.add(language)
                if language is None or (wanted is not None and language not in wanted):
                    report.excluded_by_language += 1
                    report.excluded_rows.append({"row": label, "id": view.get("id"),
                                                 "language": language or view.get("language")})
                    continue
                row = kind.parse(view, language)
                if kind.unique_ids and row.id in first_row_of_id:
                    raise BadRowError(part.label, label, "id", f"duplicate of row {first_row_of_id[row.id]}")
            except BadRowError as err:
                if source.on_bad_row == "error" and origin is not None:
                    raise BadRowError(*origin, err.field, err.reason) from None  # the file and its line
                if source.on_bad_row == "error":
                    raise
                _record_skip(report, err, raw)
                continue
            first_row_of_id[row.id] = str(label) if len(pieces) == 1 else f"{label} of {part.label}"
            why = _length_problem(source, getattr(row, kind.text))
            if why:
                report.filtered_by_length[why] = report.filtered_by_length.get(why, 0) + 1
                continue
            rows.append(row)
    rows = _cap(rows, source, report)
    report.loaded = len(rows)
    report.loaded_by_language = dict(sorted(Counter(_language(r) for r in rows).items()))
    _check_coverage(kind, report, wanted if require_languages else None, present, source.setting)
    return rows, report


def _view(raw: Any, index: int, label: int, part: Part, wanted: set[str] | None, constant: str | None) -> RowView:
    if isinstance(raw, BadLine):
        raise BadRowError(part.label, label, ROW, raw.reason)
    if not isinstance(raw, dict):
        raise BadRowError(part.label, label, ROW, f"expected a JSON object, got {type(raw).__name__}")
    return RowView(raw, index, label, part, wanted, constant)


def _language(row) -> str:
    return row.language


def _constant_language(source: Source) -> str | None:
    if source.language is None:
        return None
    found = normalize_language(source.language)
    if found is None or found.code is None:
        raise ConfigError(f"{source.setting}.language={source.language!r}: "
                          + ("not a language" if found is None else f"{found.name} has no ISO 639-1 code")
                          + f" (expected {FORMS})")
    return found.code


def _length_problem(source: Source, text: Text) -> str | None:
    if source.min_chars is None and source.max_chars is None:
        return None
    n = len(text) if isinstance(text, str) else sum(len(m["content"]) for m in text)
    if source.min_chars is not None and n < source.min_chars:
        return f"shorter than {source.min_chars} characters"
    if source.max_chars is not None and n > source.max_chars:
        return f"longer than {source.max_chars} characters"
    return None


def _cap(rows: list, source: Source, report: LoadReport) -> list:
    """At most ``per_language`` rows of each language, in input order: the first ones, or a seeded sample."""
    if source.per_language is None:
        return rows
    by_language: dict[str, list[int]] = defaultdict(list)
    for position, row in enumerate(rows):
        by_language[_language(row)].append(position)
    keep: set[int] = set()
    for language, positions in by_language.items():
        if len(positions) > source.per_language:
            report.capped_by_language[language] = len(positions) - source.per_language
            if source.sample:
                positions = random.Random(f"{source.seed}:{language}").sample(positions, source.per_language)
            else:
                positions = positions[: source.per_language]
        keep.update(positions)
    report.capped_by_language = dict(sorted(report.capped_by_language.items()))
    return [row for position, row in enumerate(rows) if position in keep]


def _record_skip(report: LoadReport, err: BadRowError, raw: Any) -> None:
    report.skipped += 1
    key = f"{err.field}: {err.reason}"
    report.skipped_by_reason[key] = report.skipped_by_reason.get(key, 0) + 1
    row_id = raw.get("id") if isinstance(raw, dict) else None
    language = raw.get("language") if isinstance(raw, dict) and isinstance(raw.get("language"), str) else None
    entry = {"row": err.row, "id": row_id, "language": language, "field": err.field, "reason": err.reason}
    if report.source != err.source:  # a set split by language: which part
        entry["source"] = err.source
    report.skipped_rows.append(entry)


def requested_languages(languages: Iterable[str] | str | None, setting: str = "data.languages") -> set[str] | None:
    """``languages`` (a list, or a comma-separated string) as a set of checked ISO 639-1 codes; None for all."""
    if languages is None:
        return None
    if isinstance(languages, str):  # "de,fr" from a command line
        languages = [code.strip() for code in languages.split(",") if code.strip()]
    wanted = set(languages)
    unknown = sorted(code for code in wanted if not is_iso_639_1(code))
    if unknown:
        raise ConfigError(f"{setting}: {unknown} are not lower-case ISO 639-1 codes (e.g. 'de')")
    if not wanted:
        raise ConfigError(f"{setting} is empty; leave it unset (null) to use every language")
    return wanted


def _languages(value: Any) -> str | None:
    if isinstance(value, (list, tuple, str)):
        try:
            requested_languages(value)
            return None
        except CongradError:
            pass
    return "a non-empty list of lower-case ISO 639-1 codes (e.g. [de, fr])"


Languages = checked(_languages, list)
"""A setting that names languages: a list of ISO 639-1 codes (or ``de,fr`` from a command line)."""


def _check_coverage(kind: RowKind, report: LoadReport, wanted: set[str] | None, present: set[str],
                    setting: str) -> None:
    if wanted is not None:
        missing = sorted(wanted - set(report.loaded_by_language))
        if missing:
            raise CongradError(
                f"{report.source}: no rows for requested language(s) {', '.join(missing)}; languages "
                f"present: {', '.join(sorted(present)) or 'none'} (set {setting}.languages accordingly)"
            )
    if report.loaded == 0:
        raise CongradError(
            f"{report.source}: no usable {kind.noun} "
            f"({report.total_rows} rows read, {report.skipped} skipped as bad)"
        )


def load_preference_rows(path, *, languages: Iterable[str] | str | None = None, setting: str = "data",
                         **options: Any) -> tuple[list[PreferenceRow], LoadReport]:
    """Preference pairs from ``path`` (a file, a saved or hub-layout folder, a hub id); ``options``: the other
    :class:`~congrad.data.sources.Source` settings (``split``, ``on_bad_row``, ``columns``, ``revision``, ...)."""
    return load_rows(PREFERENCE, Source.from_config({**options, "path": path}, setting), languages)
