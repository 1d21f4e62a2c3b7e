"""Judge outputs kept on disk, so that a rerun, a resumed loop or a second evaluation of the same answers
asks no judge twice (``judge.cache_dir``: the run directory's ``judge_cache/`` by default; one directory can
be shared by any number of runs, also at the same time).

An entry is one sampled judgement, keyed by :func:`verdict_key`: the judge model, the template, the
filled-in prompt, the sample index and the sampling settings; it also keeps the judge's identity, the
filled-in prompt and the sample index in the clear (``SELECT judge, prompt, sample, text FROM verdicts``
shows what was asked and answered). Entries live in one SQLite file,
``verdicts.sqlite``, written one transaction per batch of judgements: a process killed at any moment leaves
every committed entry readable and nothing half-written (SQLite's rollback journal; the SQLite file must be
on a file system whose locks work, as local disks and most cluster file systems' are).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from congrad.errors import ConfigError

FILE = "verdicts.sqlite"
_CHUNK = 500  # keys per SELECT (SQLite's limit on bound variables is 999 in old builds)


def verdict_key(judge: str, template: str, prompt: str, sample: int, settings: dict) -> str:
    payload = {"judge": judge, "template": template, "prompt": prompt, "sample": int(sample), "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class VerdictCache:
    """``directory/verdicts.sqlite``: key -> the judge's text; ``hits`` and ``misses`` count lookups."""

    def __init__(self, directory: str | Path, setting: str = "judge.cache_dir"):
        self.directory = Path(directory).expanduser()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.directory / FILE, timeout=120, isolation_level=None)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
                "prompt TEXT NOT NULL, sample INTEGER NOT NULL, text TEXT NOT NULL, "
                "created REAL NOT NULL)"
            )
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(
                f"{setting}={self.directory}: cannot hold the verdict cache ({type(err).__name__}: {err})"
            ) from None
        self.hits = 0
        self.misses = 0

    def get(self, keys: list[str]) -> dict[str, str]:
        """The cached texts of ``keys`` (those not cached are absent); counts hits and misses."""
        found: dict[str, str] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = self._db.execute(
                f"SELECT key, text FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update(rows)
        self.hits += sum(k in found for k in keys)
        self.misses += sum(k not in found for k in keys)
        return found

    def put(self, entries: Iterable[tuple[str, str, str, int, str]]) -> None:
        """Store ``(key, judge, prompt, sample, text)`` entries in one transaction."""
        now = time.time()
        with self._db:  # BEGIN ... COMMIT, or ROLLBACK on an error
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)", [(*entry, now) for entry in entries]
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
