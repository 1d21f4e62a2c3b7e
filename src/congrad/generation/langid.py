"""Language identification of responses with py3langid (a maintained fork of langid.py).

Its naive-Bayes model over byte n-grams ships inside the wheel (≈4.6 MB, numpy only), so it works offline
and identically everywhere. It labels 139 languages, mostly with ISO 639-1 codes, plus ``zxx`` (no
linguistic content); a few codes differ from the ones a prompt may carry and are mapped by :data:`ALIASES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# prompt language -> the label py3langid gives that language
ALIASES = {"nb": "no"}


@dataclass(frozen=True)
class Detection:
    language: str
    confidence: float  # normalised probability of ``language``


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str) -> Detection:
    language, confidence = _identifier().classify(text)
    return Detection(language, round(float(confidence), 4))


def same_language(detected: str, expected: str) -> bool:
    return detected == ALIASES.get(expected, expected)
