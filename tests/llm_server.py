"""HTTP servers for generator tests: a scripted OpenAI-compatible endpoint (faults on demand), a
misbehaving one (null answers, drip-fed and 50 MB bodies, echoed credentials) and llama-cpp-python's own
OpenAI-compatible server with the offline Gemma GGUF. Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_json(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """Answer ``handler``'s request with ``status`` and a JSON ``body`` of known length."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def completion_body(top_logprobs: dict[str, float]) -> dict:
    """An OpenAI /v1/completions body with one generated token and its top alternatives."""
    best = max(top_logprobs, key=top_logprobs.get)
    return {
        "id": "cmpl-test", "object": "text_completion", "created": 0, "model": "scripted",
        "choices": [{"index": 0, "text": best, "finish_reason": "length",
                     "logprobs": {"tokens": [best], "token_logprobs": [top_logprobs[best]],
                                  "top_logprobs": [top_logprobs], "text_offset": [0]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
    }


def chat_body(text: str) -> dict:
    return {
        "id": "chat-test", "object": "chat.completion", "created": 0, "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127},
    }


class ScriptedEndpoint:
    """An OpenAI-compatible endpoint answering from a script: each request pops the next behaviour
    ("400", "429", "500", "slow", "malformed", "empty", "ok"); when the script is empty, the first
    ``rules`` marker found in the request body decides, else ``default``. ``requests`` counts every
    HTTP request received; ``auth_headers`` keeps what clients sent."""

    def __init__(self, ok_completion: dict | None = None, ok_chat: str = "C, A, B", default: str = "ok",
                 slow_s: float = 2.0) -> None:
        self.script: list[str] = []
        self.rules: dict[str, str] = {}
        self.default = default
        self.ok_completion = ok_completion or {" B": -0.1, " A": -1.0, " C": -2.0, "the": -3.0}
        self.ok_chat = ok_chat
        self.slow_s = slow_s
        self.requests = 0
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                with endpoint._lock:
                    endpoint.requests += 1
                    endpoint.auth_headers.append(self.headers.get("Authorization", ""))
                    ruled = [b for marker, b in endpoint.rules.items() if marker in body]
                    behaviour = endpoint.script.pop(0) if endpoint.script else (ruled or [endpoint.default])[0]
                endpoint._answer(self, behaviour)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, handler: BaseHTTPRequestHandler, behaviour: str) -> None:
        if behaviour in ("400", "429", "500"):
            send_json(handler, int(behaviour), json.dumps({"error": {"message": f"scripted {behaviour}"}}).encode())
        elif behaviour == "slow":
            time.sleep(self.slow_s)
            with contextlib.suppress(OSError):
                send_json(handler, 200, json.dumps(completion_body(self.ok_completion)).encode())
        elif behaviour == "malformed":
            send_json(handler, 200, b'{"choices": [{"index": 0, "text": "B"')  # truncated JSON
        elif behaviour == "empty":
            send_json(handler, 200, b'{"id": "x", "object": "text_completion", "choices": []}')
        elif handler.path.endswith("/chat/completions"):
            send_json(handler, 200, json.dumps(chat_body(self.ok_chat)).encode())
        else:
            send_json(handler, 200, json.dumps(completion_body(self.ok_completion)).encode())

    def __enter__(self) -> ScriptedEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class MisbehavingServer:
    """Answers each POST with the next behaviour of ``script`` (then ``default``):
    ``ok:<text>`` a chat answer; ``null`` a chat answer whose content is null; ``drip`` a 200 whose
    body arrives one byte every ``drip_s`` seconds (for ``drip_total_s``); ``huge`` a 50 MB body without
    Content-Length; ``echo_error`` a 400 whose body quotes the request's Authorization header;
    ``echo_ok`` a 200 answer that quotes it; ``slow`` an ok answer after ``slow_s`` seconds."""

    def __init__(self, default: str = "ok:C, A, B", drip_s: float = 2.0, drip_total_s: float = 30.0,
                 slow_s: float = 1.5) -> None:
        self.script: list[str] = []
        self.default = default
        self.drip_s, self.drip_total_s, self.slow_s = drip_s, drip_total_s, slow_s
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    server.requests += 1
                    behaviour = server.script.pop(0) if server.script else server.default
                try:
                    server._answer(self, behaviour)
                except OSError:  # the client gave up: that is the point of several behaviours
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, handler: BaseHTTPRequestHandler, behaviour: str) -> None:
        auth = handler.headers.get("Authorization", "")
        if behaviour.startswith("ok:"):
            send_json(handler, 200, json.dumps(chat_body(behaviour[3:])).encode())
        elif behaviour == "null":
            body = chat_body("")
            body["choices"][0]["message"]["content"] = None
            send_json(handler, 200, json.dumps(body).encode())
        elif behaviour == "slow":
            time.sleep(self.slow_s)
            send_json(handler, 200, json.dumps(chat_body("B, A, C")).encode())
        elif behaviour == "echo_error":
            message = f"invalid request; you sent Authorization: {auth} (header {{'authorization': '{auth}'}})"
            send_json(handler, 400, json.dumps({"error": {"message": message, "type": "invalid_request"}}).encode())
        elif behaviour == "echo_ok":
            send_json(handler, 200, json.dumps(chat_body(f"C, A, B. Your header was {auth}")).encode())
        elif behaviour == "drip":
            body = json.dumps(chat_body("C, A, B")).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body) + int(self.drip_total_s / self.drip_s)))
            handler.end_headers()
            for _ in range(int(self.drip_total_s / self.drip_s)):  # leading white space is valid JSON
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(self.drip_s)
            handler.wfile.write(body)
        elif behaviour == "huge":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()  # no Content-Length: the body runs until the connection closes
            head = json.dumps(chat_body("C, A, B" + "#" * 50_000_000)).encode()
            for start in range(0, len(head), 1 << 20):
                handler.wfile.write(head[start:start + (1 << 20)])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def llama_cpp_server(model_path: Path, n_ctx: int = 2048, timeout_s: float = 90.0) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on a free local port; yields its /v1 base URL."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2", "--verbose", "False"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {process.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama_cpp.server did not answer on port {port} within {timeout_s}s")
            time.sleep(0.3)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
