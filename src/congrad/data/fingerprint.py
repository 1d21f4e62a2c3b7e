"""Which rows a run trains on, as a content hash a checkpoint records (docs/running.md, "Exit codes and resuming").

The hash covers, in order, each training row's id, language, prompt and chosen and rejected answers: the
rows the ConGrad filter's kept set points into. The same rows read from another path or format hash alike;
another file, a different ``data.languages`` selection, validation split (``data.val_fraction``,
``data.seed``) or an edited row does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from congrad.data.formats import PreferenceRow


def data_fingerprint(rows: Sequence[PreferenceRow], source: str) -> dict:
    """``{"sha256", "rows", "source"}`` of ``rows`` (``source`` is for messages only, not hashed)."""
    digest = hashlib.sha256()
    for row in rows:
        fields = [row.id, row.language, row.prompt, row.chosen, row.rejected]
        digest.update(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return {"sha256": digest.hexdigest(), "rows": len(rows), "source": source}
