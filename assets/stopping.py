"""SIGINT and SIGTERM end the runner of `lookups run` cleanly: its run is marked canceled at once and the
process is gone within seconds, without a traceback (docs/operations.md, "Stopping a run, a full disk").

The run executes in a worker thread, so Dagster leaves the signal handlers alone (it replaces them only on the
main thread) and the main thread's are this module's. `lookups run` forwards the signal it gets (and starts the
runner with both blocked, so one that comes while it imports waits for ``Stopper.start``). On the first one the
main thread:

1. mutes the terminal log and marks the runs this process executes CANCELING (Dagster's termination request);
2. raises ``DagsterExecutionInterruptedError`` in the worker thread, as Dagster itself does on Ctrl-C: the step in
   progress stops at its next Python line, Dagster records its failure and, the run having been asked to stop,
   ends the run CANCELED;
3. after at most ``GRACE_S`` (a step stuck in native code), marks CANCELED whatever is still unfinished;
4. writes the outcome for `lookups run` to print in one line, and exits 128 + the signal's number.

Results already written are complete files (the store stages each write and renames it); a write cut short
leaves only its staging file, which the next start removes. With ``--parent-pid`` the runner also stops (as on
SIGTERM) when `lookups run` dies without forwarding anything (SIGKILL, a crash): ``PR_SET_PDEATHSIG``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from .instance import UNFINISHED, owner_tags

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How long the run gets to unwind (the step in progress raises at its next Python line) before the runner marks
#: its runs canceled itself and exits. `lookups run` kills the runner's process group after twice this.
GRACE_S = 5.0
#: Set once a stop begins: the terminal log prints nothing more (`lookups run` says what happened, in one line).
MUTED = threading.Event()
#: The job whose run `lookups run` reports (automation.MAIN_JOB).
MAIN_JOB = "lookups"
PR_SET_PDEATHSIG = 1


class Stopper:
    """Runs a function in a worker thread and turns SIGINT or SIGTERM into a canceled run and an exit (see the
    module's docstring)."""

    def __init__(self, result_path: str | None = None):
        self.result_path = result_path
        self.instance: dg.DagsterInstance | None = None  # set by the runner once it opened the instance
        self.signum: int | None = None
        self.worker: threading.Thread | None = None
        self.runs: dict[str, str] = {}  # run id -> job name, of the runs this stop asked to cancel

    def start(self, parent_pid: int | None = None) -> Stopper:
        """Handle SIGINT and SIGTERM from now on (main thread only); with ``parent_pid``, stop when it dies."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # `lookups run` blocked them until now
        if parent_pid:
            die_with_parent(parent_pid)
        return self

    def run(self, target: Callable[[], T]) -> T:
        """``target()`` in a worker thread; its value, or its exception raised here."""
        box: dict = {}

        def work() -> None:
            try:
                box["value"] = target()
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                box["error"] = err

        self.worker = threading.Thread(target=work, name="lookups-run")
        self.worker.start()
        while self.worker.is_alive():
            self.worker.join(0.5)  # the signal handlers run on this thread, between these waits
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            return  # already stopping
        if self.worker is not None and not self.worker.is_alive():
            return  # the run has ended: its outcome is being written, and `lookups run` says it was stopped after it
        self.signum = signum
        MUTED.set()
        reason = f"Stopped by {signal.Signals(signum).name} (`lookups run` interrupted): results computed so far are kept."
        deadline, interrupted = time.monotonic() + GRACE_S, 0.0
        while self.worker is not None and self.worker.is_alive() and time.monotonic() < deadline:
            self._mark(reason, final=False)  # every pass: a run that started meanwhile is asked to stop too
            if time.monotonic() - interrupted > 1.0:  # again if the first landed where nothing stops on it
                interrupt_thread(self.worker, dg.DagsterExecutionInterruptedError)
                interrupted = time.monotonic()
            self.worker.join(0.2)
        self._mark(reason, final=True)
        self._exit(signum)

    def _own_runs(self) -> list[dg.DagsterRun]:
        statuses = [*UNFINISHED, dg.DagsterRunStatus.CANCELING]
        return list(self.instance.get_runs(filters=dg.RunsFilter(statuses=statuses, tags=owner_tags())))

    def _mark(self, reason: str, final: bool) -> None:
        """Ask this process's unfinished runs to stop (CANCELING); ``final``: mark those still unfinished CANCELED."""
        if self.instance is None:
            return
        try:
            for run in self._own_runs():
                self.runs.setdefault(run.run_id, run.job_name)
                if final:
                    self.instance.report_run_canceled(run, reason)
                elif run.status != dg.DagsterRunStatus.CANCELING:
                    self.instance.report_run_canceling(run, reason)
        except Exception:  # noqa: BLE001 - an instance that cannot be written (a full disk): the next start marks them
            pass

    def _outcome(self, signum: int) -> dict:
        outcome: dict = {"stopped": signal.Signals(signum).name, "run_id": None, "status": None}
        main = [run_id for run_id, job in self.runs.items() if job == MAIN_JOB]
        if main and self.instance is not None:
            outcome["run_id"] = main[-1]
            try:
                run = self.instance.get_run_by_id(main[-1])
                outcome["status"] = run.status.value if run else None
            except Exception:  # noqa: BLE001 - unknown, and said so
                pass
        return outcome

    def _exit(self, signum: int) -> None:
        try:
            if self.result_path:
                with open(self.result_path, "w") as fh:
                    json.dump(self._outcome(signum), fh)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)


def interrupt_thread(thread: threading.Thread, error: type[BaseException]) -> None:
    """Raise ``error`` in ``thread`` at its next Python line (what Dagster raises in a step on Ctrl-C)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(error))


def die_with_parent(parent_pid: int) -> None:
    """Receive SIGTERM (a clean stop) when the process that started this one dies (Linux); if it already has, stop now."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
