"""Which process executes a run started by ``rar materialize``, and what becomes of the run when that
process is gone.

``rar materialize`` executes its job in its own process: there is no run worker for Dagster's run
monitoring to watch, so a ``kill -9`` (or an OOM kill, or a lost machine) leaves the run STARTED for
ever, and the new-release sensor, which waits while a run that writes movie_vectors is in flight, would
wait for ever too. The command therefore tags its runs with its host, pid and process start time, and
:func:`fail_orphaned_runs` marks a run failed once that process no longer exists on this host (a pid the
system has given to another process has another start time). It runs when ``rar materialize`` starts
and at every tick of the new-release sensor.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

HOST_TAG, PID_TAG, STARTED_TAG = "rar/host", "rar/pid", "rar/process_started"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22); None when no such
    process runs (a zombie has exited). Without /proc (not Linux) only existence is known: '' for a live
    process."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name before ')' may hold spaces
    return None if fields[0] == "Z" else fields[19]


def owner_tags() -> dict[str, str]:
    """Tags that name this process as the one executing a run."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: process_started(pid) or ""}


def owner_alive(tags: dict[str, str]) -> bool:
    """True while the process the tags name still runs (on this host)."""
    started = process_started(int(tags[PID_TAG]))
    if started is None:
        return False
    recorded = tags.get(STARTED_TAG, "")
    return not recorded or not started or started == recorded


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every in-flight run of this host whose executing process is gone; their run ids."""
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT, tags={HOST_TAG: host})):
        if PID_TAG not in run.tags or owner_alive(run.tags):
            continue
        instance.report_run_failed(
            run,
            message=f"the process that executed this run (pid {run.tags[PID_TAG]} on {host}) is gone, killed or "
            "crashed: marked failed. Steps it finished stay materialised; run the job again to finish.",
        )
        failed.append(run.run_id)
    return failed
