"""Ctrl-C and SIGTERM during training: finish the step, save, stop."""
import os
import signal


class StopRequest:
    """SIGINT/SIGTERM: the first finishes the step and saves; a second exits at once."""

    def __init__(self, logger):
        self.logger = logger
        self.signum = None
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                return

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        self.logger.warning("%s received: finishing this step, saving a checkpoint, then stopping "
                            "(send it again to stop at once)", signal.Signals(signum).name)

    def __bool__(self) -> bool:
        return self.signum is not None
