"""Stop requests: the launcher's ``stop_file`` or SIGUSR1, agreed on by every rank.

At each optimizer-step boundary every rank computes its flag (the file exists, or this rank
got SIGUSR1) and the flags are all-reduced (MAX), so all ranks see the request at the same
step, save the same checkpoint and exit with :data:`EXIT_REQUEUE`.
"""

from __future__ import annotations

import os
import signal

EXIT_REQUEUE = 75  # EX_TEMPFAIL: saved on request, not finished; the launcher requeues


class StopRequested(Exception):
    """Raised out of the loop after the stop checkpoint is saved."""

    def __init__(self, step: int, path):
        super().__init__(f"saved checkpoint-{step} at step {step}")
        self.step, self.path = step, path


class StopWatch:
    """Notes SIGUSR1 on this rank; :meth:`requested` asks every rank at a step boundary."""

    def __init__(self, stop_file: str | None):
        self.stop_file = stop_file
        self.signalled = False
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def requested(self, dist) -> bool:
        """Collective: True on every rank if any rank saw a request."""
        mine = self.signalled or bool(self.stop_file and os.path.exists(self.stop_file))
        (flag,) = dist.allmax([1.0 if mine else 0.0])
        return flag > 0
