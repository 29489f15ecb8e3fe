"""SIGTERM/SIGINT as a request to checkpoint and stop, polled by the training loop.

Schedulers (Slurm, Kubernetes, preemptible VMs) send SIGTERM some seconds before killing
a job; Ctrl-C sends SIGINT. Either sets a flag that the loop checks after every jitted
call; the loop then saves a checkpoint, waits for it to be on disk and stops, so that
relaunching the same command resumes. A second signal while stopping aborts at once.
(Orbax's own preemption detection needs ``jax.distributed.initialize()``; this works for
a single process too.)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager that records the first SIGTERM/SIGINT instead of dying.

    Handlers are installed only in the main thread (Python allows no other); elsewhere
    the request can still be made with :meth:`request`. Previous handlers are restored
    on exit. Entered inside another ``StopRequest`` that was already signalled, it starts
    out requested.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def request(self, signum: int) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.requested:  # second signal: stop waiting for a clean exit
            self._restore()
            signal.raise_signal(signum)
            return
        self.request(signum)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                previous = signal.signal(signum, self._handle)
                self._previous[signum] = previous
                # Nested in another request (a sweep around its runs): a signal that came
                # before this one was entered is this one's too.
                outer = getattr(previous, "__self__", None)
                if isinstance(outer, StopRequest) and outer.requested and not self.requested:
                    self.request(outer.signum)
        return self

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()
