"""Loading and validating preference data (the format: README, "Preference data").

A row is ``prompt``, ``chosen``, ``rejected`` (each a string, or TRL's conversational form: a list of
``{"role", "content"}`` messages), ``language`` (an ISO 639-1 code) and an optional ``id``; any other
field passes through untouched in :attr:`PreferenceRow.raw`.

Two numbers identify a row. :attr:`PreferenceRow.index` is its position among the rows, from 0 in input
order (blank lines of a JSON-lines file are not rows): the key every other part of congrad uses.
:attr:`PreferenceRow.source_row` is what the user sees in every message and report ("row N"): in a
JSON-lines file the 1-based line number, blank lines counted, as an editor shows it; elsewhere (Parquet, a
JSON array, a ``datasets`` folder or hub id) the position, as ``dataset[N]`` indexes it. A folder of JSON-lines
files is read file by file (the files ``datasets.load_dataset`` would read, in its order): its rows are
numbered by position, but a bad row is reported by its file and line, where the user can find it.

JSON lines are split on ``\n`` alone and each line is decoded as UTF-8 on its own: U+2028, U+2029 or U+0085
inside a string are legal JSON and stay part of their row, and a line that is not UTF-8 is one bad row
naming its line.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from congrad.data.languages import is_iso_639_1
from congrad.errors import BadRowError, CongradError

Messages = list[dict[str, Any]]
Text = str | Messages

ROLES = ("system", "user", "assistant")
ON_BAD_ROW = ("error", "skip")
JSON_SUFFIXES = (".jsonl", ".json")
LOCAL_SUFFIXES = (*JSON_SUFFIXES, ".parquet")
ROW = "<row>"  # the field named when the row as a whole is malformed


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


@dataclass
class LoadReport:
    """What happened to every input row: loaded, skipped as bad, or excluded by language (and, once
    tokenized by the datamodule, truncated)."""

    source: str
    total_rows: int = 0
    loaded: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # "<field>: <reason>" -> count
    # {"row", "id", "language", "field", "reason"} each; "row" as messages show it (module docstring)
    skipped_rows: list[dict] = field(default_factory=list)
    excluded_by_language: int = 0
    excluded_rows: list[dict] = field(default_factory=list)  # {"row", "id", "language"} of each excluded row
    loaded_by_language: dict[str, int] = field(default_factory=dict)
    # filled by the datamodule: pairs whose prompt / chosen / rejected truncation cut (overall, by language)
    truncated: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def load_preference_rows(
    path: str | os.PathLike,
    *,
    split: str = "train",
    languages: Iterable[str] | str | None = None,
    on_bad_row: str = "error",
) -> tuple[list[PreferenceRow], LoadReport]:
    """Read and validate preference rows.

    ``path`` is a ``.jsonl`` / ``.json`` file (JSON lines; a ``.json`` file holding one JSON array also
    works), a ``.parquet`` file, a directory written by ``datasets.Dataset.save_to_disk``, any other local
    directory or a Hugging Face hub id (both read with ``datasets.load_dataset(path, split=split)``).

    A bad row raises :class:`BadRowError` naming the file, the row and the field; with
    ``on_bad_row="skip"`` it is skipped and recorded in the report instead. ``languages`` keeps only rows
    of those languages (the others are counted as excluded); a requested language without rows is an
    error, and so is an input with no usable row at all.
    """
    if on_bad_row not in ON_BAD_ROW:
        raise CongradError(f"data.on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got {on_bad_row!r}")
    wanted = requested_languages(languages)
    source = os.fspath(path)
    report = LoadReport(source=source)
    rows: list[PreferenceRow] = []
    first_row_of_id: dict[str, int] = {}
    present: set[str] = set()  # languages of every valid row, excluded or not
    for index, (label, raw, origin) in enumerate(_rows_with_origin(source, split)):
        report.total_rows += 1
        try:
            row = parse_row(raw, index, source, row=label)
            if row.id in first_row_of_id:
                raise BadRowError(source, label, "id", f"duplicate of row {first_row_of_id[row.id]}")
        except BadRowError as err:
            if on_bad_row == "error" and origin is not None:
                raise BadRowError(*origin, err.field, err.reason) from None  # the file and its line
            if on_bad_row == "error":
                raise
            _record_skip(report, err, raw)
            continue
        first_row_of_id[row.id] = label
        present.add(row.language)
        if wanted is not None and row.language not in wanted:
            report.excluded_by_language += 1
            report.excluded_rows.append({"row": label, "id": row.id, "language": row.language})
            continue
        rows.append(row)
    report.loaded = len(rows)
    report.loaded_by_language = dict(sorted(Counter(r.language for r in rows).items()))
    _check_coverage(report, wanted, present)
    return rows, report


def parse_row(raw: Any, index: int, source: str, row: int | None = None) -> PreferenceRow:
    """Validate one raw row, the ``index``-th of ``source``; raises :class:`BadRowError` for the first
    problem found, naming ``row`` (the row's number as messages show it; ``index`` when not given)."""
    label = index if row is None else row
    if isinstance(raw, BadLine):
        raise BadRowError(source, label, ROW, raw.reason)
    if not isinstance(raw, dict):
        raise BadRowError(source, label, ROW, f"expected a JSON object, got {type(raw).__name__}")
    prompt = parse_text(raw, "prompt", label, source, roles=ROLES)
    chosen = parse_text(raw, "chosen", label, source, roles=("assistant",))
    rejected = parse_text(raw, "rejected", label, source, roles=("assistant",))
    check_a_preference(chosen, rejected, label, source)
    return PreferenceRow(
        index=index,
        id=parse_id(raw, index, source, row=label),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        language=parse_language(raw, label, source),
        raw=raw,
        source_row=label,
    )


def parse_text(raw: dict, name: str, index: int, source: str, roles: tuple[str, ...]) -> Text:
    """Field ``name`` of a raw row: a non-blank string, or a non-empty list of messages with these roles.
    ``index``: the row's number in the error message."""
    value = raw.get(name)
    if value is None:
        raise BadRowError(source, index, name, "missing")
    if isinstance(value, str):
        if not value:
            raise BadRowError(source, index, name, "empty string")
        if not value.strip():
            raise BadRowError(source, index, name, "blank string")
        return value
    if isinstance(value, list):
        if not value:
            raise BadRowError(source, index, name, "empty message list")
        for message in value:
            problem = _message_problem(message, roles)
            if problem:
                raise BadRowError(source, index, name, problem)
        if not any(message["content"].strip() for message in value):
            raise BadRowError(source, index, name, "all message contents are blank")
        return value
    raise BadRowError(
        source, index, name, f"expected a string or a list of messages, got {type(value).__name__}"
    )


def check_a_preference(chosen: Text, rejected: Text, row: int, source: str) -> None:
    """A pair must prefer one answer to another: ``chosen`` and ``rejected`` that are the same text (a string
    is one assistant turn, as the tokenizer renders it) make a row without a preference, whose DPO gradient
    is zero and whose ConGrad score would be rounding noise."""
    if _turns(chosen) == _turns(rejected):
        raise BadRowError(source, row, "rejected", "identical to chosen: a pair without a preference")


def _turns(text: Text) -> list[tuple[str, str]]:
    return [("assistant", text)] if isinstance(text, str) else [(m["role"], m["content"]) for m in text]


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


def parse_language(raw: dict, index: int, source: str) -> str:
    """The row's ``language``: a lower-case ISO 639-1 code. ``index``: the row's number in the error message."""
    value = raw.get("language")
    if value is None:
        raise BadRowError(source, index, "language", "missing")
    if not isinstance(value, str):
        raise BadRowError(source, index, "language", f"expected a string, got {type(value).__name__}")
    if not value:
        raise BadRowError(source, index, "language", "empty string")
    if not is_iso_639_1(value):
        raise BadRowError(
            source,
            index,
            "language",
            f"unknown language code {value!r} (expected lower-case ISO 639-1, e.g. 'de')",
        )
    return value


def parse_id(raw: dict, index: int, source: str, row: int | None = None) -> str:
    """The row's ``id`` as a string (a string or an integer in the data); the row index when absent.
    ``row``: the row's number in the error message (``index`` when not given)."""
    label = index if row is None else row
    value = raw.get("id")
    if value is None:
        return str(index)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRowError(source, label, "id", f"expected a string or an integer, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise BadRowError(source, label, "id", "empty string")
    return str(value)


def _record_skip(report: LoadReport, err: BadRowError, raw: Any) -> None:
    report.skipped += 1
    key = f"{err.field}: {err.reason}"
    report.skipped_by_reason[key] = report.skipped_by_reason.get(key, 0) + 1
    row_id = raw.get("id") if isinstance(raw, dict) else None
    language = raw.get("language") if isinstance(raw, dict) and isinstance(raw.get("language"), str) else None
    report.skipped_rows.append(
        {"row": err.row, "id": row_id, "language": language, "field": err.field, "reason": err.reason}
    )


def requested_languages(languages: Iterable[str] | str | None) -> set[str] | None:
    """``data.languages`` as a set of checked codes (a list, or a comma-separated string); None for all."""
    if languages is None:
        return None
    if isinstance(languages, str):  # "de,fr" from a command line
        languages = [code.strip() for code in languages.split(",") if code.strip()]
    wanted = set(languages)
    unknown = sorted(code for code in wanted if not is_iso_639_1(code))
    if unknown:
        raise CongradError(f"data.languages: {unknown} are not lower-case ISO 639-1 codes (e.g. 'de')")
    if not wanted:
        raise CongradError("data.languages is empty; leave it unset (null) to use every language")
    return wanted


def _check_coverage(report: LoadReport, wanted: set[str] | None, present: set[str]) -> None:
    if wanted is not None:
        missing = sorted(wanted - set(report.loaded_by_language))
        if missing:
            raise CongradError(
                f"{report.source}: no rows for requested language(s) {', '.join(missing)}; languages "
                f"present: {', '.join(sorted(present)) or 'none'} (set data.languages accordingly)"
            )
    if report.loaded == 0:
        raise CongradError(
            f"{report.source}: no usable preference rows "
            f"({report.total_rows} rows read, {report.skipped} skipped as bad)"
        )


# --- reading ------------------------------------------------------------------------------------


class BadLine:
    """Stands in for a JSON-lines row that cannot be read (not UTF-8, not JSON), so it is reported like any
    other bad row."""

    def __init__(self, reason: str):
        self.reason = reason


def read_raw_rows(source: str, split: str) -> Iterator[Any]:
    """The raw rows of a JSONL/JSON/Parquet file, a saved ``datasets`` folder or a hub dataset, in order."""
    return (raw for _, raw in read_numbered_rows(source, split))


def read_numbered_rows(source: str, split: str) -> Iterator[tuple[int, Any]]:
    """``(number, raw row)`` of every row of ``source`` in order; the number is what messages show (module
    docstring): a JSON-lines file's 1-based line, else the 0-based position. A JSON-lines line that is not
    UTF-8 or not JSON comes as a stand-in that :func:`parse_row` reports as a bad row."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in JSON_SUFFIXES:
            return _read_json_rows(path)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return enumerate(pq.read_table(path).to_pylist())
        raise CongradError(f"{source}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet")
    if path.is_dir() and _is_saved_dataset(path):
        return enumerate(_load_saved_dataset(path, split).to_list())
    if not path.exists() and (path.suffix.lower() in LOCAL_SUFFIXES or source.startswith((".", "/", "~"))):
        raise CongradError(
            f"{source}: file not found; set data.path to an existing file, directory or hub dataset id"
        )
    return enumerate(_load_hub_dataset(source, split).to_list())


def _rows_with_origin(source: str, split: str) -> Iterator[tuple[int, Any, tuple[str, int] | None]]:
    """:func:`read_numbered_rows` with, for a row of a folder of JSON-lines files, ``(file, line)``: what a
    message about it names (its number in reports stays its position among the folder's rows)."""
    files = _json_lines_files(Path(source), split)
    if files is None:
        yield from ((label, raw, None) for label, raw in read_numbered_rows(source, split))
        return
    position = 0
    for file in files:
        for line, raw in _read_json_rows(file):
            yield position, raw, (str(file), line)
            position += 1


def _json_lines_files(path: Path, split: str) -> list[Path] | None:
    """The files of ``split`` of a local folder that ``datasets.load_dataset`` reads, in its order, when they
    are all JSON lines (a folder of ``.jsonl`` files); None for anything else."""
    if not path.is_dir() or _is_saved_dataset(path):
        return None
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path)).get(split)
    except Exception:  # no data files, or a layout datasets resolves otherwise: left to load_dataset
        return None
    if not files or not all(Path(f).suffix.lower() == ".jsonl" for f in files):
        return None
    return [Path(f) for f in files]


def read_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSON-lines file, 1-based; a line that is not
    UTF-8 or not JSON raises :class:`BadRowError` naming the file and the line. For files congrad wrote
    itself (generations, scores) as well as for input."""
    for line_number, value in _json_lines(Path(path).read_bytes()):
        if isinstance(value, BadLine):
            raise BadRowError(os.fspath(path), line_number, ROW, value.reason)
        yield line_number, value


_BOM = b"\xef\xbb\xbf"


def _read_json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    data = path.read_bytes()
    body = data[len(_BOM):] if data.startswith(_BOM) else data
    if path.suffix.lower() == ".json" and body.lstrip().startswith(b"["):
        try:
            rows = json.loads(_decode(data, path))
        except json.JSONDecodeError as err:
            raise CongradError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
        yield from enumerate(rows)
        return
    yield from _json_lines(data)


def _json_lines(data: bytes) -> Iterator[tuple[int, Any]]:
    """Split at newline bytes only, JSON Lines' one separator (``str.splitlines`` would also split at
    U+2028, U+2029 and U+0085, which JSON strings may hold). A UTF-8 byte-order mark at the start is ignored."""
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    for line_number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield line_number, BadLine("not valid UTF-8")
            continue
        try:
            yield line_number, json.loads(text)
        except json.JSONDecodeError:
            yield line_number, BadLine("invalid JSON")


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CongradError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8"
        ) from None


def _is_saved_dataset(path: Path) -> bool:
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    return any((path / marker).is_file() for marker in markers)


def _load_saved_dataset(path: Path, split: str):
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise CongradError(f"{path}: no split {split!r}; available: {', '.join(loaded)} (set data.split)")
        return loaded[split]
    return loaded


def _load_hub_dataset(source: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(source, split=split)
    except Exception as err:  # datasets raises many types; the user needs one clear message
        raise CongradError(
            f"cannot load preference data from {source!r}: it is not a local .jsonl/.json/.parquet file or "
            f"saved dataset, and loading it with datasets.load_dataset(split={split!r}) failed "
            f"({type(err).__name__}: {err}). Set data.path to a local file or a reachable hub dataset id "
            f"(offline: download it first, or unset HF_HUB_OFFLINE), and data.split to one of its splits."
        ) from None
