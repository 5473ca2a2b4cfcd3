"""Native code under test in a child process: a crash (SIGILL from an unportable llama.cpp build, a
segfault) fails the test that hit it with a clear message instead of killing the whole pytest session.

``IsolatedObject(factory, *args)`` builds ``factory(*args)`` in a fresh ``spawn`` process; ``call(name,
*args)`` runs a method there (dotted names reach into attributes: ``"stats.as_dict"``) and returns its
(picklable) result; ``get``/``set`` read and write an attribute. Exceptions raised in the child are
re-raised here.
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
import traceback
from collections.abc import Callable
from typing import Any

import pytest

REBUILD_HINT = ("llama-cpp-python was probably built for CPU features this machine cannot run (AVX-512/AMX); "
                "./install.sh rebuilds it portably (RAR_LLAMA_CMAKE_ARGS to override)")


def _serve(connection, factory: Callable, args: tuple) -> None:
    target = factory(*args)
    connection.send(("ready", None))
    while True:
        try:
            op, name, values = connection.recv()
        except EOFError:
            return
        try:
            if op == "call":
                result = functools.reduce(getattr, name.split("."), target)(*values)
            elif op == "get":
                result = functools.reduce(getattr, name.split("."), target)
            else:
                setattr(target, name, values[0])
                result = None
            connection.send(("ok", result))
        except Exception as error:  # noqa: BLE001 - handed back to the parent test
            connection.send(("error", (error, traceback.format_exc())))


class IsolatedObject:
    def __init__(self, factory: Callable, *args: Any, timeout_s: float = 600.0, hint: str = REBUILD_HINT) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, factory, args), daemon=True)
        self._process.start()
        child_end.close()
        self.timeout_s = timeout_s
        self.hint = hint
        self._receive("starting")

    def _receive(self, what: str):
        if not self._connection.poll(self.timeout_s):
            self.close()
            pytest.fail(f"child process gave no answer to {what} within {self.timeout_s:.0f}s")
        try:
            status, payload = self._connection.recv()
        except EOFError:
            self._process.join(5)
            code = self._process.exitcode
            died = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            pytest.fail(f"child process died during {what} ({died}): {self.hint}", pytrace=False)
        if status == "error":
            error, child_traceback = payload
            raise error from RuntimeError(f"in the child process:\n{child_traceback}")
        return payload

    def call(self, name: str, *args: Any):
        self._connection.send(("call", name, args))
        return self._receive(f"{name}()")

    def get(self, name: str):
        self._connection.send(("get", name, ()))
        return self._receive(f"reading {name}")

    def set(self, name: str, value: Any) -> None:
        self._connection.send(("set", name, (value,)))
        self._receive(f"setting {name}")

    def close(self) -> None:
        self._connection.close()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def __enter__(self) -> IsolatedObject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
