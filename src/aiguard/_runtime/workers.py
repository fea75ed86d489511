"""Background work, owned by the runtime: periodic daemon workers.

Every periodic thread aiguard runs is a :class:`Worker`; the only others are the deadline
watchdog and the timeout pool of ``deadlines`` (sync calls under a timeout), and one-shot threads
of ``lifecycle`` that hand a replaced recorder's records over and write at exit, each with a
deadline. A :class:`Worker` starts lazily (``ensure()``), runs
its step every ``interval`` seconds or when woken, never dies of an exception in its step
(reported once, counted), stops on ``stop()``, and after ``fork()`` is simply forgotten in the
child (its thread does not exist there) until the next ``ensure()`` starts it again. Workers are
daemon threads: a step stuck on I/O can never keep the process from exiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import errors
from .state import track


class Worker:
    """A daemon thread that runs ``step()`` every ``interval`` seconds, or when woken."""

    def __init__(self, name: str, step: Callable[[], Any], interval: float) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.thread: threading.Thread | None = None
        self.stopped = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        track(self)

    def ensure(self) -> bool:
        """Start the thread if it is not running (first use, or first use after a fork); False
        if no thread can be started now (the process's limit: reported, tried again later)."""
        thread = self.thread
        if thread is not None and thread.is_alive():
            return True
        with self._lock:
            if self.stopped or (self.thread is not None and self.thread.is_alive()):
                return not self.stopped
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                errors.report(f"starting {self.name}", exc)
                return False
            self.thread = thread
            return True

    def wake(self) -> None:
        """Run the step now rather than at the next interval. Cheap when already asked: a
        producer that outruns the step calls this on every item, and ``Event.set`` takes a lock
        and notifies each time."""
        if not self._wake.is_set():
            self._wake.set()

    def stop(self) -> None:
        """Stop after the current step (does not wait for it)."""
        self.stopped = True
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the thread to end; True if it has."""
        thread = self.thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while not self.stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self.stopped:
                break
            try:
                self.step()
            except Exception as exc:
                errors.report(f"background worker {self.name}", exc)

    def _after_fork(self) -> None:
        self.thread = None  # the parent's thread does not exist here; ensure() starts one

    def __repr__(self) -> str:
        return f"<Worker {self.name} every {self.interval:g} s>"
