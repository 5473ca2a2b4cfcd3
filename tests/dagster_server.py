"""`dagster dev` for tests: started on 127.0.0.1 on a free port, in its own process group, stopped by its PID.

A background `dagster dev` ignores SIGINT and SIGTERM while SIGINT is ignored (as it is for a background
job of a shell), so it is started through a wrapper that resets SIGINT to its default first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DAGSTER = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
_RESET_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_dagster_dev(cwd: Path, env: dict[str, str], log_path: Path, port: int) -> subprocess.Popen:
    """`dagster dev -w workspace.yaml` on 127.0.0.1:``port``, output to ``log_path``, in a new session."""
    command = [sys.executable, "-c", _RESET_SIGINT, DAGSTER, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
               "-p", str(port)]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(url: str, process: subprocess.Popen, timeout: float) -> str:
    """The body of ``url`` once it answers; fails when the server exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {process.returncode}")
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def graphql(base_url: str, query: str, variables: dict | None = None) -> dict:
    """The ``data`` of a GraphQL query to the webserver (fails on GraphQL errors)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base_url}/graphql", data=body, headers={"Content-Type": "application/json"})
    answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    if answer.get("errors"):
        raise AssertionError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def stop(process: subprocess.Popen) -> None:
    """SIGINT the group (dagster dev shuts down its children), then SIGKILL whatever is left after 5 s."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # children of the group may take a moment to be reaped
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
