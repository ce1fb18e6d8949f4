"""Ctrl-C and SIGTERM during training: the first asks the run to stop after the optimizer step in
progress (it then saves a state and exits cleanly, so the resumed run equals the uninterrupted
one); a second stops at once."""

from __future__ import annotations

import signal
import threading

from tqdm.auto import tqdm


class StopRequest:
    """`with StopRequest() as stop:` ... `if stop.requested: ...` between steps."""

    def __init__(self):
        self.requested: str | None = None  # "Ctrl-C" / "SIGTERM" once asked
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        tqdm.write(
            f"{self.requested}: stopping after this step and saving a state (press Ctrl-C again to stop at once)."
        )

    def request(self, why: str) -> None:
        """Ask for a stop from inside the program (the web UI's stop, a control file)."""
        self.requested = self.requested or why

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
