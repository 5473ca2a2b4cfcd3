"""A local, long-lived process that answers ``rar recommend`` with its models already loaded.

Loading a recommender (torch, sentence-transformers, the retriever checkpoint, the title linker over the
corpus, the generator's film vectors) takes 15-40 s on a small machine, while answering one message
takes well under a second. So the first ``rar recommend`` starts this service in the background and
waits for it; later calls send their message over a Unix socket and print the answer.

- **One service per configuration**: the socket's name is a hash of the resolved ``RAR_HOME`` and every
  other ``RAR_*`` variable except the API key, so changing a setting starts a fresh service. Sockets
  live in a folder only the user can enter (``$TMPDIR/rar-<uid>``, mode 0700).
- **Fresh answers**: before each message the service compares the files it loaded (the current retriever
  checkpoint, the corpus, the vector table) with what is on disk, and reloads when a new materialisation
  replaced one of them.
- **Goes away by itself** after ``RAR_RECOMMEND_IDLE_MINUTES`` without a message (``rar recommend
  --stop-server`` stops it at once). Its log: ``$RAR_HOME/logs/recommend-service.log``.
- ``openai`` is answered in the calling process: the service never holds an API key.

The protocol is one JSON object per line each way: ``{"text", "k", "backend"}`` ->
``{"ok": true, "rows", "mentioned", "retriever", "generator", "problems"}`` or ``{"ok": false, "error"}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

SERVED_BACKENDS = ("embedding", "llama_cpp")  # openai runs in the caller: the service holds no key
MAX_REQUEST_BYTES = 1 << 16
START_TIMEOUT_S = 600.0  # loading on a busy 2-core machine
ANSWER_TIMEOUT_S = 600.0  # a local LLM ranking on a busy machine
_KEY_VARIABLES_EXCLUDED = {"RAR_GENERATOR_API_KEY"}


class ServiceError(RuntimeError):
    """The service could not be started or could not answer; the message says why."""


def service_key(environ: Mapping[str, str], home: Path) -> str:
    """A short hash of the configuration a service answers for (RAR_* variables without the key)."""
    settings = sorted((k, v) for k, v in environ.items() if k.startswith("RAR_") and k not in _KEY_VARIABLES_EXCLUDED)
    from corpus_build.storage import is_remote

    where = str(home) if is_remote(home) else str(Path(home).resolve())
    return hashlib.sha256(json.dumps([where, settings]).encode()).hexdigest()[:16]


def socket_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / f"rar-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise ServiceError(f"{folder} must belong to you and be private (mode 0700); remove it or fix its mode")
    return folder


def socket_path(key: str) -> Path:
    return socket_dir() / f"recommend-{key}.sock"


def log_path(key: str) -> Path:
    """The service's log, beside its socket (a local file even when RAR_HOME is an object store)."""
    return socket_dir() / f"recommend-{key}.log"


# ----------------------------------------------------------------------------------- loading


def input_fingerprint(settings) -> tuple:
    """Size and mtime (an object's: size and ETag) of every file a recommender is loaded from (checkpoints,
    corpus, vector table)."""
    from corpus_build.storage import as_path, fingerprint
    from training.layout import SYSTEMS, checkpoint_path

    paths = [checkpoint_path(settings.home, system) for system in SYSTEMS] + [settings.table_file("movie_corpus")]
    vectors = as_path(settings.vector_db_uri)
    if vectors.is_dir():
        paths += sorted(vectors.glob("*/_versions"), key=str)
    out = []
    for path in paths:
        with contextlib.suppress(OSError):
            if (stamp := fingerprint(path)) is not None:
                out.append((str(path), stamp))
    return tuple(out)


def current_retrieve(settings):
    """(retrieve(history_ids, text, k), name): the current trained retriever (see
    :func:`training.promotion.load_current_retriever`), else semantic search of movie_vectors;
    (None, reason) when neither exists."""
    from training.layout import text_vectors_dir
    from training.promotion import load_current_retriever

    retriever = load_current_retriever(settings.home, settings.retriever_kind, text_cache_dir=text_vectors_dir(settings.home))
    if retriever is not None:
        def retrieve(history, text, k):
            return retriever.retrieve(history, k, exclude=history, context=[{"role": "seeker", "text": text}])

        return retrieve, getattr(retriever, "name", "retriever")
    store = settings.vector_store()
    if not store.exists():
        return None, f"neither a trained retriever nor a movie_vectors table at {settings.vector_db_uri}"

    def search(history, text, k):
        hits = store.search(store.embedder.encode([text])[0], k=k, exclude_ids=list(history), columns=())
        return [(hit["movie_id"], hit["score"]) for hit in hits]

    return search, "movie_vectors search (no trained retriever yet)"


def load_recommender(backend: str, api_key: str | None = None):
    """(Recommender, retriever name, fingerprint function) for ``backend`` from the current settings."""
    from rar_pipeline.resources import GeneratorResource
    from rar_pipeline.settings import get_settings
    from training.recommend import Recommender

    settings = get_settings()
    retrieve, retriever_name = current_retrieve(settings)
    if retrieve is None:
        raise ServiceError(f"{retriever_name}: run `rar materialize` first")
    generator = GeneratorResource(backend=backend, api_key=api_key).make_generator()
    recommender = Recommender(settings.table_file("movie_corpus"), retrieve, generator,
                              candidates=settings.alignment_set_size,
                              generator_weight=settings.pipeline_generator_weight)
    return recommender, retriever_name, lambda: input_fingerprint(settings)


# ----------------------------------------------------------------------------------- the service side


class Service:
    """Answers recommend requests; one loaded recommender per backend, reloaded when its inputs change."""

    def __init__(self, load: Callable[[str], tuple[object, str, Callable[[], object]]], log: Callable[[str], None]):
        """``load(backend)`` -> (recommender, retriever name, fingerprint function of its inputs)."""
        self._load, self._log = load, log
        self._loaded: dict[str, tuple] = {}

    def _recommender(self, backend: str):
        entry = self._loaded.get(backend)
        if entry is not None and entry[2]() == entry[3]:
            return entry
        if entry is not None:
            self._log(f"inputs of the {backend} recommender changed on disk: reloading")
            with contextlib.suppress(Exception):
                entry[0].generator.close()
        started = time.monotonic()
        recommender, retriever_name, fingerprint = self._load(backend)
        self._loaded[backend] = (recommender, retriever_name, fingerprint, fingerprint())
        self._log(f"{backend} recommender loaded in {time.monotonic() - started:.1f}s")
        return self._loaded[backend]

    def handle(self, request: Mapping) -> dict:
        backend = str(request.get("backend") or "")
        if backend not in SERVED_BACKENDS:
            return {"ok": False, "error": f"the service answers {', '.join(SERVED_BACKENDS)}, not {backend!r}"}
        try:
            recommender, retriever_name, _, _ = self._recommender(backend)
            stats = recommender.generator.stats
            failures, unparsed = stats.failures, stats.unparsed
            rows, mentioned = recommender.recommend(str(request["text"]), int(request["k"]))
        except Exception as error:  # one bad request must not end the service
            self._log(f"request failed: {type(error).__name__}: {error}")
            return {"ok": False, "error": f"{type(error).__name__}: {error}"}
        problems = [f"{int(n)} {what}" for n, what in ((stats.failures - failures, "failed"),
                                                       (stats.unparsed - unparsed, "unparsed")) if n]
        keep = ("rank", "movie_id", "title", "year")
        return {"ok": True, "rows": [{k: row.get(k) for k in keep} for row in rows], "mentioned": mentioned,
                "retriever": retriever_name, "generator": recommender.generator.name, "problems": problems}

    def close(self) -> None:
        for entry in self._loaded.values():
            with contextlib.suppress(Exception):
                entry[0].generator.close()


def serve(path: Path, service: Service, idle_seconds: float, log: Callable[[str], None]) -> None:
    """Listen on ``path`` until ``idle_seconds`` pass without a request (or a stop request)."""
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(8)
    server.settimeout(1.0)
    log(f"listening on {path} (pid {os.getpid()}, idle timeout {idle_seconds:.0f}s)")
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_seconds:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            with connection:
                request = _read_line(connection, timeout=30.0)
                if request is None:
                    continue
                if request.get("stop"):
                    _send(connection, {"ok": True, "stopped": os.getpid()})
                    log("stop requested")
                    return
                _send(connection, service.handle(request))
            last = time.monotonic()
        log("idle: exiting")
    finally:
        server.close()
        path.unlink(missing_ok=True)
        service.close()


def _read_line(connection: socket.socket, timeout: float) -> dict | None:
    connection.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST_BYTES:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return message if isinstance(message, dict) else None


def _send(connection: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):
        connection.sendall(json.dumps(message).encode() + b"\n")


def main() -> None:
    """Entry point of the background process (started by :func:`ask`)."""
    import argparse

    parser = argparse.ArgumentParser(description="rar recommend service (started by `rar recommend`)")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--idle-seconds", type=float, required=True)
    args = parser.parse_args()

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)

    service = Service(load_recommender, log)
    try:
        from rar_pipeline.settings import get_settings

        service._recommender(get_settings().generator_backend if get_settings().generator_backend in SERVED_BACKENDS
                             else SERVED_BACKENDS[0])  # load before listening: a connectable socket = ready
    except Exception as error:
        log(f"could not load the recommender: {type(error).__name__}: {error}")
        raise SystemExit(1) from error
    serve(args.socket, service, args.idle_seconds, log)


# ----------------------------------------------------------------------------------- the client side


def _exchange(path: Path, message: dict, timeout: float) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ServiceError("the recommend service closed the connection without an answer")
    return json.loads(data.decode("utf-8"))


def _start(path: Path, log_file: Path, idle_seconds: float) -> subprocess.Popen:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rar_pipeline.recommend_service", "--socket", str(path), "--idle-seconds",
             str(idle_seconds)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def ask(request: dict, key: str, log_file: Path, idle_seconds: float, on_start: Callable[[], None] | None = None,
        start_timeout: float = START_TIMEOUT_S) -> dict:
    """The service's answer to ``request``, starting the service first when none is running."""
    path = socket_path(key)
    with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
        return _exchange(path, request, ANSWER_TIMEOUT_S)
    lock_path = path.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one caller starts it; the others wait here, then connect
        with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
            return _exchange(path, request, ANSWER_TIMEOUT_S)
        if on_start is not None:
            on_start()
        process = _start(path, log_file, idle_seconds)
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceError(f"the recommend service exited while loading (code {process.returncode}); "
                                   f"see {log_file}:\n{_tail(log_file)}")
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
                return _exchange(path, request, ANSWER_TIMEOUT_S)
            time.sleep(0.2)
        process.terminate()
        raise ServiceError(f"the recommend service did not start within {start_timeout:.0f}s; see {log_file}")


def stop(key: str, wait_s: float = 30.0) -> int | None:
    """Stop the service of this configuration (returns once its socket is gone); its pid, or None when
    none was running."""
    path = socket_path(key)
    try:
        pid = _exchange(path, {"stop": True}, 30.0).get("stopped")
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    deadline = time.monotonic() + wait_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


if __name__ == "__main__":
    main()
