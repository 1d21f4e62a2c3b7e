"""Declared settings: each config group's keys, their types and their bounds, once, as a pydantic model next to
the code that reads the group. The same declaration serves :func:`congrad.settings.check_settings` (the whole
composed config, every problem at once, before anything loads) and the constructors that take the group's
values (``Schema.check(key=value, ...)`` for the arguments they were given).

Pydantic because it declares a key as its type with bounds (``Annotated[float, Field(gt=0, le=1)]``), nests
groups, and reports every error with its place; Hydra structured configs would check types when the config is
composed but not ranges, and would need a second, hand-written range check again. Validation is strict (no
``"1"`` for an integer, no ``true`` for 1, no NaN) and reads a partial group: a key that is absent is left to the
code's own default, an unknown key is an error (``extra="forbid"``) unless the group passes it through
(``extra="allow"``: arguments of a ``_target_`` the project does not own). The messages say what a key allows
in words (``must be a number in (0, 1], or null``), derived from the declaration.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from congrad.errors import ConfigError

Rule = Callable[[Any], "str | None"]
"""A check beyond a type and bounds: None when the value is allowed, else what is allowed (in words)."""


class Unresolved:
    """A value that could not be read from the config (``???``, an interpolation that does not resolve)."""

    def __init__(self, reason: str):
        self.reason = reason


class Settings(BaseModel):
    """A config group's declared keys. ``group`` is the group's place in the config (``filter``,
    ``eval.win_rate``) for the messages; ``relations`` yields the problems of keys that constrain each other."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
    group: ClassVar[str] = ""

    @classmethod
    def relations(cls, values: dict[str, Any]) -> Iterator[str]:
        """Problems between keys, over the group's plain values (only keys that are there and well typed)."""
        return iter(())

    @classmethod
    def problems(cls, values: Any, group: str | None = None) -> list[str]:
        """Every problem of ``values`` (a plain mapping) against this declaration, as ``key=value: must be …``."""
        group = cls.group if group is None else group
        if not isinstance(values, dict):
            return [f"{group}={show(values)}: must be a mapping of settings"]
        found, bad = [], set()
        try:
            cls.model_validate(values)
        except ValidationError as err:
            for error in err.errors():
                if error["type"] == "missing":  # absent: the code's default applies
                    continue
                place, message = _message(cls, group, error, values)
                if place not in bad:
                    bad.add(place)
                    found.append(message)
        found.extend(_relations(cls, values, group, bad))
        order = _places(values, group)
        return sorted(found, key=lambda message: order.get(_place_of(message), len(order)))

    @classmethod
    def check(cls, group: str | None = None, **values: Any) -> None:
        """Raise :class:`ConfigError` naming each of ``values`` this declaration does not allow."""
        problems = cls.problems(values, group)
        if problems:
            raise ConfigError("; ".join(problems))


class Instantiated(Settings):
    """A group Hydra instantiates: ``_target_`` and the instantiation flags besides the declared arguments."""

    target_: Annotated[str, Field(alias="_target_")]
    convert_: Annotated[Literal["none", "partial", "object", "all"], Field(alias="_convert_")]
    partial_: Annotated[bool, Field(alias="_partial_")]
    recursive_: Annotated[bool, Field(alias="_recursive_")]


class PassThrough(Instantiated):
    """A ``_target_`` whose arguments are someone else's (Lightning's, torch's): declared keys are checked,
    any other is passed through unchecked."""

    model_config = ConfigDict(extra="allow")


FreeForm = dict[str, Any]
"""A mapping whose keys are data (names of sets, paths, hub fields), not settings."""


def checked(rule: Rule, base: Any = Any) -> Any:
    """The type of a key checked by ``rule``; ``base`` is what it holds, for the reader."""

    def validate(value: Any) -> Any:
        if isinstance(value, Unresolved):
            raise PydanticCustomError("unresolved", "{reason}", {"reason": value.reason})
        what = rule(value)
        if what is not None:
            raise PydanticCustomError("rule", "{what}", {"what": what})
        return value

    return Annotated[base, PlainValidator(validate)]


def _non_empty(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


Text = checked(_non_empty, str)


def show(value: Any) -> str:
    """A value as the messages write it: ``null``, ``'text'``, ``1.5``, ``[de, fr]`` as Python shows it."""
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


# ---- messages ---------------------------------------------------------------------------------------------------
def _relations(cls: type[Settings], values: dict, group: str, bad: set[str]) -> Iterator[str]:
    """The relations of ``cls``, of every declaration it is built from and of the groups it holds, over the
    keys that passed."""
    usable = {k: v for k, v in values.items() if _join(group, k) not in bad and not isinstance(v, Unresolved)}
    seen = set()
    for klass in cls.__mro__:
        relations = klass.__dict__.get("relations")
        if relations is not None and relations.__func__ not in seen:
            seen.add(relations.__func__)
            yield from relations.__func__(cls, usable)
    fields = {f.alias or name: f for name, f in cls.model_fields.items()}
    for key, value in usable.items():
        nested = _model_of(fields[key].annotation) if key in fields else None
        if nested is not None and isinstance(value, dict):
            yield from _relations(nested, value, _join(group, key), bad)


def _places(values: dict, group: str) -> dict[str, int]:
    """Each key's place (``eval.nll.columns``) -> its position in the config, depth first: the messages follow
    the config from top to bottom, as the user reads it."""
    order = {}
    for key, value in values.items():
        order[_join(group, str(key))] = len(order)
        if isinstance(value, dict):
            for place in _places(value, _join(group, str(key))):
                order[place] = len(order)
    return order


def _place_of(message: str) -> str:
    """The key a message is about: what comes before its ``=``, ``:`` or first space."""
    return re.split(r"[=: ]", message, maxsplit=1)[0]


def _join(group: str, key: str) -> str:
    return f"{group}.{key}" if group else key


def _message(cls: type[Settings], group: str, error: dict, values: dict) -> tuple[str, str]:
    """(the key's place, the message) for one pydantic error: at the declared key it falls under."""
    model, place, value, annotation = cls, group, values, None
    for part in error["loc"]:
        if model is None:  # inside a list or a mapping a key holds: the message is about the key
            break
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        parent, place = place, _join(place, str(part))
        value = value.get(part) if isinstance(value, dict) else value
        if part not in fields:
            known = ", ".join(sorted(fields))
            return place, f"{place}: no such setting ({parent or 'the config'} has {known})"
        annotation = fields[part]
        model = _model_of(annotation.annotation)
        if model is not None and not isinstance(value, dict):
            break
    if isinstance(value, Unresolved):
        return place, f"{place} {value.reason}"
    if error["type"] == "rule":
        what = error["ctx"]["what"] + (", or null" if _optional(annotation.annotation) else "")
    else:
        what = describe(annotation.annotation, annotation.metadata)
    return place, f"{place}={show(value)}: must be {what}"


def _model_of(annotation: Any) -> type[Settings] | None:
    for arm in typing.get_args(annotation) if _optional(annotation) else (annotation,):
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            return arm
    return None


def _optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def describe(annotation: Any, metadata: list | tuple = ()) -> str:
    """What a declared type allows, in words (the tail of ``must be …``)."""
    if _optional(annotation):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(describe(a, metadata) for a in rest) + ", or null"
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        return describe(base, [*metadata, *extra])
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(o) for o in typing.get_args(annotation))
    bounds = _bounds(metadata)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        lo = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else None)
        hi = bounds.get("le", bounds["lt"] - 1 if "lt" in bounds else None)
        if lo is not None and hi is not None:
            return f"an integer from {lo} to {hi}"
        return "an integer" + (f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else "")
    if annotation is float:
        lo, lo_open = (bounds["gt"], True) if "gt" in bounds else (bounds.get("ge"), False)
        hi, hi_open = (bounds["lt"], True) if "lt" in bounds else (bounds.get("le"), False)
        if lo is not None and hi is not None:
            return f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        if lo is not None:
            return f"a number {'>' if lo_open else '>='} {lo:g}"
        return "a finite number"
    if annotation is str:
        return "a string"
    origin = typing.get_origin(annotation)
    if origin is list:
        return "a list"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "a mapping of settings"
    return str(annotation)


def _bounds(metadata: list | tuple) -> dict[str, Any]:
    bounds = {}
    for item in metadata:
        for name in ("gt", "ge", "lt", "le"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(item, name)
        for nested in getattr(item, "metadata", ()):  # a Field(...) inside Annotated
            bounds.update(_bounds([nested]))
    return bounds
