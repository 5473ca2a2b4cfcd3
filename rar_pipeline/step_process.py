"""Imported only by the fork server of the multiprocess executor (``preload_modules`` in
``rar_pipeline.execution``): every step process forked from it is killed as soon as the fork server ends,
and the fork server ends as soon as the run's own process is gone, even after a ``kill -9``. So no step
outlives its run and keeps writing events or artefacts for a run already marked failed."""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (elsewhere: nothing to do)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


os.register_at_fork(after_in_child=die_with_parent)
