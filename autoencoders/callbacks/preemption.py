"""A run stopped by SIGTERM (a scheduler's preemption, ``kill``) saves where it stopped."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException


class CheckpointOnSIGTERM(Callback):
    """On SIGTERM Lightning finishes the batch in progress and stops between two batches
    (raising ``SIGTERMException``); this callback writes the ``ModelCheckpoint`` named
    ``filename`` (the CLI's ``last.ckpt``) there, so that ``fit --ckpt_path last`` goes on from
    the very next batch. A SIGKILL or Ctrl-C stops a run inside a step, where no consistent
    state exists: such a run resumes from its newest checkpoint and trains the steps after it
    again.

    Args:
        filename: the ``filename`` of the ``ModelCheckpoint`` whose file is rewritten.
    """

    def __init__(self, filename: str = "last") -> None:
        self.filename = filename

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception) -> None:
        if not isinstance(exception, SIGTERMException) or not trainer.training:
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.filename == self.filename:
                path = Path(callback.dirpath, self.filename + callback.FILE_EXTENSION)
                trainer.save_checkpoint(path)
                return
