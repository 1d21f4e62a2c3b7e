"""Language labels: ISO 639-1 codes, and the codes and names data sources use for them.

Rows carry an ISO 639-1 code (``de``). Sources bring others: ISO 639-3 (``deu``) and 639-2/B (``ger``) codes,
English names (``German``, ``german``), locales (``DE_DE``, ``zh-CN``, ``ES_LA``) and FLORES codes
(``deu_Latn``, ``zho_Hans``). :func:`normalize_language` maps each to its ISO 639-1 code through the table
``data/languages.tsv`` (every ISO 639-3 language, with its two-letter code where it has one); a locale or a
FLORES code is read by its language part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from congrad.utils.project import project_root

ISO_639_1: frozenset[str] = frozenset(
    """
    aa ab ae af ak am an ar as av ay az
    ba be bg bh bi bm bn bo br bs
    ca ce ch co cr cs cu cv cy
    da de dv dz
    ee el en eo es et eu
    fa ff fi fj fo fr fy
    ga gd gl gn gu gv
    ha he hi ho hr ht hu hy hz
    ia id ie ig ii ik io is it iu
    ja jv
    ka kg ki kj kk kl km kn ko kr ks ku kv kw ky
    la lb lg li ln lo lt lu lv
    mg mh mi mk ml mn mr ms mt my
    na nb nd ne ng nl nn no nr nv ny
    oc oj om or os
    pa pi pl ps pt
    qu
    rm rn ro ru rw
    sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw
    ta te tg th ti tk tl tn to tr ts tt tw ty
    ug uk ur uz
    ve vi vo
    wa wo
    xh
    yi yo
    za zh zu
    """.split()
)
"""All 184 two-letter codes of ISO 639-1, lower case (with ``bh``, which ISO has since deprecated)."""

# a language part, then a region (DE_DE, zh-CN, ES_LA, AR_XY) or a script (deu_Latn, zh-Hans)
_QUALIFIED = re.compile(r"^([A-Za-z]{2,3})[_-]([A-Za-z]{2}|[0-9]{3}|[A-Za-z]{4})$")
FORMS = "an ISO 639-1 or 639-3 code, an English name, a locale (DE_DE) or a FLORES code (deu_Latn)"


def is_iso_639_1(code: object) -> bool:
    """True when ``code`` is a lower-case ISO 639-1 code such as ``"de"``; ``"DE"`` and ``"deu"`` are not."""
    return isinstance(code, str) and code in ISO_639_1


@dataclass(frozen=True)
class Language:
    """What a source's language value names: ``code``, its ISO 639-1 code (None for a language that has none,
    e.g. Cebuano), and ``name``, the language's English name."""

    code: str | None
    name: str


@dataclass(frozen=True)
class _Table:
    by_code: dict[str, Language]  # ISO 639-3 and 639-2/B codes
    by_name: dict[str, Language]  # lower-case English names


@lru_cache(maxsize=1)
def _table() -> _Table:
    by_code: dict[str, Language] = {}
    by_name: dict[str, Language] = {}
    path = project_root() / "data" / "languages.tsv"
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line and not line.startswith("#")]
    for line in lines[1:]:  # the header
        iso3, iso2b, iso1, names = line.split("\t")
        language = Language(iso1 or None, names.split("|")[0])
        for code in (iso3, iso2b):
            if code:
                by_code[code] = language
        for name in names.split("|"):
            # a name shared by languages of different codes names none of them (first wins among equals)
            known = by_name.setdefault(name.lower(), language)
            if known.code != language.code:
                by_name[name.lower()] = Language(None, name)
    for code in ISO_639_1:
        by_code.setdefault(code, Language(code, code))
    return _Table(by_code, by_name)


def normalize_language(value: object) -> Language | None:
    """The language ``value`` names (:data:`FORMS`), None when it names none. Codes are matched without
    regard to case (``DE`` is ``de``), names without regard to case, ``_`` or ``-`` (``german``, ``German``)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    table = _table()
    lower = text.lower()
    if len(lower) in (2, 3) and lower.isalpha():
        return table.by_code.get(lower) if len(lower) == 3 else (Language(lower, lower) if lower in ISO_639_1 else None)
    qualified = _QUALIFIED.match(text)
    if qualified:
        return normalize_language(qualified.group(1))
    return table.by_name.get(re.sub(r"[_\-\s]+", " ", lower))


def iso_639_1(value: object) -> str | None:
    """The ISO 639-1 code ``value`` names, None when it names none or a language without one."""
    language = normalize_language(value)
    return language.code if language is not None else None
