"""A callback for the resume tests: the process gets a signal in the middle of a training step."""

import os
import signal

from pytorch_lightning import Callback


class Kill(Callback):
    """Sends ``signal`` to this process just before its ``step``-th optimizer step (counted
    over the run): with several optimizers, some of the batch's updates are made and some not."""

    def __init__(self, step: int, signal: str = "SIGKILL") -> None:
        self.step, self.signal, self.count = step, signal, 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.count += 1
        if self.count == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))
