"""Where rows come from: a data source as it is (docs/data.md, "Preference data"), read into numbered raw rows.

A :class:`Source` is a local ``.jsonl`` / ``.json`` / ``.parquet`` file, a folder written by
``datasets.save_to_disk``, a local copy of a hub data set (a folder laid out as the hub repository is, read by
``datasets.load_dataset`` exactly as the hub id would be), or a hub id (``name``: its config, ``split``,
``revision``). A set split by language has ``{lang}`` in its ``path``, ``name`` or ``split``; each language
asked for is one part, ``{lang}`` written in the set's own code (``lang_codes``: ``{de: german}``; the ISO
639-1 code itself when not listed), and the part's rows are of that language.

Row numbers (module docstring of :mod:`congrad.data.formats`): in a JSON-lines file the 1-based line, blank
lines counted; elsewhere the 0-based position, as ``dataset[N]``. JSON lines are split on ``\\n`` alone and each
line is decoded as UTF-8 on its own: U+2028, U+2029 or U+0085 inside a string are legal JSON and stay part of
their row, and a line that is not UTF-8 or not JSON is one bad row naming its line.

A hub id that cannot be reached fails at once (no network: ``HF_HUB_OFFLINE=1`` without a cached copy, or the
hub not answering within seconds: :mod:`congrad.utils.hub`) with one line that names the data set, the setting
and how to download it; a gated one also says how to get access.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from congrad.data.languages import FORMS, is_iso_639_1, normalize_language
from congrad.errors import BadRowError, ConfigError, CongradError
from congrad.utils.schema import Settings, Text, checked

JSON_SUFFIXES = (".jsonl", ".json")
LOCAL_SUFFIXES = (*JSON_SUFFIXES, ".parquet")
ROW = "<row>"  # the field named when the row as a whole is malformed
LANG = "{lang}"
OnBadRow = Literal["error", "skip"]
ON_BAD_ROW = typing.get_args(OnBadRow)


@dataclass(frozen=True)
class Source:
    """A data source and how to read it; ``setting`` is its config key (``data``, ``eval.win_rate``, ...), named
    in every message. The fields other than the location are used by :func:`congrad.data.formats.load_rows`."""

    path: str
    setting: str = "data"
    name: str | None = None  # hub config
    split: str = "train"
    revision: str | None = None
    # our field <- the source's field (dotted for nested values: messages.0.content); choices: a list of fields
    columns: Mapping[str, Any] = field(default_factory=dict)
    language: str | None = None  # the language of every row, in any form normalize_language reads
    lang_codes: Mapping[str, str] = field(default_factory=dict)  # ISO 639-1 -> the set's code, for {lang}
    per_language: int | None = None  # keep at most this many rows of each language
    sample: bool = False  # the rows kept under per_language: a seeded random sample (else the first ones)
    seed: int = 0
    min_chars: int | None = None  # rows whose main text is shorter / longer are filtered out (counted)
    max_chars: int | None = None
    on_bad_row: str = "error"
    gated: bool = False  # the hub set needs its terms accepted: the error says how to get access

    @property
    def split_by_language(self) -> bool:
        return any(LANG in (value or "") for value in (self.path, self.name, self.split))

    def part(self, language: str | None) -> "Part":
        """The part of ``language`` (``None``: the source itself, not split by language)."""
        if language is None:
            return Part(self, None, self.path, self.name, self.split)
        code = str(self.lang_codes.get(language, language))
        fill = (lambda value: None if value is None else value.replace(LANG, code))
        return Part(self, language, fill(self.path), fill(self.name), fill(self.split))

    @classmethod
    def from_config(cls, section: Mapping[str, Any], setting: str, **defaults: Any) -> "Source":
        """A source from a config section: its keys that are fields of :class:`Source` (others, such as
        ``enabled`` or ``generation``, belong to the part that reads it)."""
        from omegaconf import OmegaConf

        plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                 for k, v in section.items()}
        keys = set(cls.__dataclass_fields__) - {"setting"}
        values = {**defaults, **{k: v for k, v in plain.items() if k in keys and v is not None}}
        if not values.get("path"):
            raise ConfigError(f"{setting}.path is not set")
        values["path"] = str(values["path"])
        for key in ("columns", "lang_codes"):
            values[key] = dict(values.get(key) or {})
        return cls(setting=setting, **values)


def _columns(value: Any) -> str | None:
    ok = isinstance(value, dict) and all(
        (isinstance(f, str) and f) or (isinstance(f, (list, tuple)) and f and all(isinstance(x, str) and x for x in f))
        for f in value.values()
    )
    return None if ok else "a mapping of our field -> the source's field (dotted: nested), or to a list of fields"


def _language(value: Any) -> str | None:
    found = normalize_language(value)
    return None if found is not None and found.code is not None else f"a language with an ISO 639-1 code: {FORMS}"


def _lang_codes(value: Any) -> str | None:
    ok = isinstance(value, dict) and all(is_iso_639_1(k) and isinstance(c, str) and c for k, c in value.items())
    return None if ok else "a mapping of ISO 639-1 code -> the set's own code of the language, e.g. {de: german}"


class SourceSettings(Settings):
    """How a data source is read (the fields of :class:`Source`), under ``data``, ``eval.pairs``, ..."""

    path: Text | None
    name: Text | None
    split: Text
    revision: Text | None
    seed: int
    columns: checked(_columns, dict) | None
    language: checked(_language, str) | None
    lang_codes: checked(_lang_codes, dict) | None
    per_language: Annotated[int, Field(ge=1)] | None
    sample: bool
    min_chars: Annotated[int, Field(ge=0)] | None
    max_chars: Annotated[int, Field(ge=1)] | None
    on_bad_row: OnBadRow
    gated: bool


@dataclass(frozen=True)
class Part:
    """One readable piece of a source: the whole source, or one language's part of a set split by language."""

    source: Source
    language: str | None  # the language of every row of this part (None: from the rows)
    path: str
    name: str | None
    split: str

    @property
    def label(self) -> str:
        """How messages name this part: a local file by its path, a hub or folder set by id, config and split."""
        if Path(self.path).is_file():
            return self.path
        return self.path + "".join(f" [{key} {value}]" for key, value in (("config", self.name), ("split", self.split))
                                   if value) + (f" @ {self.source.revision}" if self.source.revision else "")

    def rows(self) -> Iterator[tuple[int, Any, tuple[str, int] | None]]:
        """``(row number, raw row, origin)`` in order (module docstring); a JSON-lines line that cannot be read
        comes as a :class:`BadLine`. ``origin`` is ``(file, line)`` for a row of a folder of JSON-lines files,
        what a message about it names (its number in reports stays its position among the folder's rows)."""
        files = None if self.name else _json_lines_files(Path(self.path), self.split)
        if files is None:
            rows = read_numbered_rows(self.path, self.split, name=self.name, revision=self.source.revision,
                                      source=self.source)
            yield from ((label, raw, None) for label, raw in rows)
            return
        position = 0
        for file in files:
            for line, raw in _read_json_rows(file):
                yield position, raw, (str(file), line)
                position += 1


def parts(source: Source, languages: Iterable[str] | None) -> list[Part]:
    """The parts to read: one per language asked for when the source is split by language, else the source."""
    if not source.split_by_language:
        return [source.part(None)]
    if languages is None:
        raise ConfigError(f"{source.setting}: {source.path!r} is split by language ({LANG} in path, name or split): "
                          f"say which languages to read ({source.setting}.languages)")
    return [source.part(language) for language in sorted(set(languages))]


# ---- reading ----------------------------------------------------------------------------------------------
class BadLine:
    """Stands in for a JSON-lines row that cannot be read (not UTF-8, not JSON), so it is reported like any
    other bad row."""

    def __init__(self, reason: str):
        self.reason = reason


def read_numbered_rows(path: str, split: str = "train", *, name: str | None = None, revision: str | None = None,
                       source: Source | None = None) -> Iterator[tuple[int, Any]]:
    """``(number, raw row)`` of every row of ``path`` in order (module docstring)."""
    local = Path(path)
    if local.is_file():
        suffix = local.suffix.lower()
        if suffix in JSON_SUFFIXES:
            return _read_json_rows(local)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return enumerate(pq.read_table(local).to_pylist())
        raise CongradError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet")
    setting = source.setting if source is not None else "data"
    if local.is_dir() and _is_saved_dataset(local):
        return enumerate(_load_saved_dataset(local, split, setting).to_list())
    if not local.exists() and (local.suffix.lower() in LOCAL_SUFFIXES or path.startswith((".", "/", "~"))):
        raise ConfigError(f"{setting}.path={path}: file not found; give an existing file, directory or hub "
                          f"data set id, or switch the part off ({setting}.enabled=false) where it is one")
    return enumerate(load_hub_dataset(path, name, split, revision, source).to_list())


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


def _json_lines_files(path: Path, split: str) -> list[Path] | None:
    """The files of ``split`` of a local folder that ``datasets.load_dataset`` reads, in its order, when they
    are all JSON lines (a folder of ``.jsonl`` files without configs of its own); None for anything else."""
    if not path.is_dir() or _is_saved_dataset(path) or _declares_configs(path):
        return None
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path)).get(split)
    except Exception:  # no data files, or a layout datasets resolves otherwise: left to load_dataset
        return None
    if not files or not all(Path(f).suffix.lower() == ".jsonl" for f in files):
        return None
    return [Path(f) for f in files]


def _declares_configs(path: Path) -> bool:
    """Whether a folder's README card lists ``configs`` (a hub layout: the card says which files are which)."""
    readme = path / "README.md"
    return readme.is_file() and "\nconfigs:" in readme.read_text(encoding="utf-8", errors="replace")


def _load_saved_dataset(path: Path, split: str, setting: str):
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise CongradError(f"{path}: no split {split!r}; available: {', '.join(loaded)} (set {setting}.split)")
        return loaded[split]
    return loaded


# ---- the hub ----------------------------------------------------------------------------------------------
def load_hub_dataset(path: str, name: str | None, split: str, revision: str | None, source: Source | None = None):
    """``datasets.load_dataset(path, name, split=split, revision=revision)``: a hub id, or a local folder laid
    out as a hub repository (its README's ``configs`` say which files make each config and split). A hub id
    without network fails at once with one line (module docstring); so does any other failure to load."""
    import datasets

    from congrad.utils import hub

    setting = source.setting if source is not None else "data"
    local = Path(path).is_dir()
    if not local and not hub.offline() and not hub.reachable():  # the hub client would retry for a minute
        why = (f"the hub ({hub_endpoint()}) cannot be reached; a copy is in the local cache: read it with "
               "HF_HUB_OFFLINE=1" if hub.cached(path, "dataset") else "the hub cannot be reached (no network)")
        raise _unreachable(path, name, split, revision, setting, source, why)
    try:
        return datasets.load_dataset(path, name, split=split, revision=None if local else revision)
    except Exception as err:  # datasets raises many types; the user needs one clear line
        first = (str(err).strip().splitlines() or [""])[0]
        if local:
            raise CongradError(f"{setting}.path={path}: cannot load this folder as a data set with config {name!r} "
                               f"and split {split!r} ({type(err).__name__}: {first})") from None
        why = ("no network (HF_HUB_OFFLINE=1) and no cached copy" if hub.offline()
               else hub.access_problem(path, "dataset") or f"{type(err).__name__}: {first}")
        raise _unreachable(path, name, split, revision, setting, source, why) from None


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _unreachable(path, name, split, revision, setting, source, why: str) -> CongradError:
    where = "".join(f", {key} {value!r}" for key, value in (("config", name), ("split", split), ("revision", revision))
                    if value)
    rev = f" --revision {revision}" if revision else ""
    gated = ""
    if (source is not None and source.gated) and "gated" not in why.lower():
        gated = (f"; it is gated: accept its terms at https://huggingface.co/datasets/{path} and log in "
                 "(`huggingface-cli login`, or set HF_TOKEN) first")
    return CongradError(
        f"{setting}: cannot load the data set {path!r}{where}: {why}. Download it where there is network "
        f"(`huggingface-cli download --repo-type dataset {path}{rev} --local-dir DIR`) and set {setting}.path=DIR, "
        f"or run with network access (HF_HUB_OFFLINE unset){gated}"
    )
