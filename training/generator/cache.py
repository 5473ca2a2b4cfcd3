"""A persistent response cache keyed by (endpoint, model, prompt, request parameters), in SQLite.

Only the model name, a hash of the request and the response body are stored: never credentials,
never the endpoint's headers. Two endpoints serving a model of one name (a local server and a hosted
one) never share answers. SQLite makes every write atomic and lets several processes share it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def cache_key(endpoint: str, model: str, prompt: str, params: Mapping[str, Any] | None = None) -> str:
    """sha256 of the endpoint (base URL), the model, the request parameters that change the answer, and
    the prompt."""
    blob = json.dumps({"endpoint": endpoint.rstrip("/"), "model": model, "params": dict(params or {}),
                       "prompt": prompt}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """``get`` / ``put`` JSON responses by key; safe across threads of one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute(
            "create table if not exists responses ("
            " key text primary key, model text not null, response text not null, created real not null)"
        )
        self._db.commit()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("select response from responses where key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, response: Mapping[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute(
                "insert or replace into responses (key, model, response, created) values (?, ?, ?, ?)",
                (key, model, json.dumps(response), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("select count(*) from responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
