"""A persistent response cache keyed by (endpoint, model, prompt, request parameters), in SQLite.

Only the model name, a hash of the request and the response body are stored: never credentials,
never the endpoint's headers. Two endpoints serving a model of one name (a local server and a hosted
one) never share answers. SQLite makes every write atomic and lets several processes share it.

SQLite cannot live on an object store, so there the cache is a log of immutable segments: a folder of
``<time>-<random>.jsonl.gz`` objects, each written whole in one PUT and never rewritten. Each process
keeps a local SQLite working copy (``corpus_build.storage.working_folder``), imports the segments it
has not seen when it opens, and publishes what it added as a new segment at every :meth:`flush` (the
generator flushes after each batch) and on :meth:`close`. Concurrent runs write different segments, so
none can damage another's answers, and a reader only ever lists complete segments. A key answered twice
keeps the newest answer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corpus_build.storage import as_path, is_remote, working_folder

SEGMENT_SUFFIX = ".jsonl.gz"


def cache_key(endpoint: str, model: str, prompt: str, params: Mapping[str, Any] | None = None) -> str:
    """sha256 of the endpoint (base URL), the model, the request parameters that change the answer, and
    the prompt."""
    blob = json.dumps({"endpoint": endpoint.rstrip("/"), "model": model, "params": dict(params or {}),
                       "prompt": prompt}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """``get`` / ``put`` JSON responses by key; safe across threads of one process.

    ``path`` is a SQLite file, or an object-store folder of segments (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.segments = as_path(path) if is_remote(path) else None
        self.path = working_folder(self.segments) / "responses.sqlite" if self.segments else Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, str, float]] = []  # added since the last published segment
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute(
            "create table if not exists responses ("
            " key text primary key, model text not null, response text not null, created real not null)"
        )
        self._db.execute("create table if not exists segments (name text primary key)")
        self._db.commit()
        if self.segments is not None:
            self._import_segments()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("select response from responses where key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, response: Mapping[str, Any]) -> None:
        row = (key, model, json.dumps(response), time.time())
        with self._lock, self._db:
            self._db.execute("insert or replace into responses (key, model, response, created) values (?, ?, ?, ?)",
                             row)
            if self.segments is not None:
                self._pending.append(row)

    def flush(self) -> None:
        """Publish the answers added since the last flush as one new segment (object-store caches only)."""
        with self._lock:
            rows, self._pending = self._pending, []
        if not rows or self.segments is None:
            return
        from corpus_build.atomic import write_bytes_atomic

        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"
        lines = "".join(json.dumps(dict(zip(("key", "model", "response", "created"), row))) + "\n" for row in rows)
        write_bytes_atomic(gzip.compress(lines.encode()), self.segments / name)
        with self._lock, self._db:
            self._db.execute("insert or ignore into segments (name) values (?)", (name,))

    def _import_segments(self) -> int:
        """Load the segments other runs published since this working copy last looked; how many."""
        names = sorted(p.name for p in self.segments.glob(f"*{SEGMENT_SUFFIX}")) if self.segments.exists() else []
        with self._lock:
            seen = {row[0] for row in self._db.execute("select name from segments")}
        fresh = [name for name in names if name not in seen]
        for name in fresh:
            rows = [json.loads(line) for line in gzip.decompress((self.segments / name).read_bytes()).splitlines()]
            with self._lock, self._db:
                self._db.executemany(
                    "insert into responses (key, model, response, created) values (:key, :model, :response, :created)"
                    " on conflict(key) do update set model = excluded.model, response = excluded.response,"
                    " created = excluded.created where excluded.created > responses.created", rows)
                self._db.execute("insert or ignore into segments (name) values (?)", (name,))
        return len(fresh)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("select count(*) from responses").fetchone()[0]

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()
