"""The child-process harness for native code: a crash becomes one failed test with its signal named."""

import signal

import pytest
from isolated import IsolatedObject


def test_a_child_killed_by_sigill_fails_the_test_with_the_signal_and_the_fix():
    with pytest.raises(pytest.fail.Exception, match=r"killed by SIGILL.*install\.sh"):
        IsolatedObject(signal.raise_signal, signal.SIGILL)


def test_calls_and_errors_cross_the_process_boundary():
    with IsolatedObject(dict, {"a": 1}) as child:
        assert child.call("get", "a") == 1
        child.call("update", {"b": 2})
        assert child.call("copy") == {"a": 1, "b": 2}
        with pytest.raises(KeyError):
            child.call("__getitem__", "missing")
