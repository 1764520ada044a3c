"""Stop (or warn) at the first non-finite training loss, naming the step and the term."""

from __future__ import annotations

from typing import Literal

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or infinite."""


class NonFiniteGuard(Callback):
    """Watches the loss and the terms that every training step returned (every term of every
    phase: ``train/disc_z``, ``train/gen``, ``train/cls``...). At the first NaN or infinite one,
    ``mode="stop"`` raises ``NonFiniteLoss`` naming the batch, the epoch and the terms, before
    any checkpoint of the poisoned weights is written, so the last good checkpoint stays as it
    was; ``mode="warn"`` warns once and trains on.

    A step only queues its terms (no arithmetic, no host sync); every ``every_n_steps`` batches,
    before validation, at the end of each epoch and before every checkpoint, the queued terms
    are checked at once (one host sync), so a GPU seldom waits for the host and the host does
    no per-step work. A fault is reported at the batch where it happened.

    Args:
        mode: ``stop`` or ``warn``.
        every_n_steps: batches between the host's reads of the queue.
    """

    def __init__(self, mode: Literal["stop", "warn"] = "stop", every_n_steps: int = 100) -> None:
        if every_n_steps < 1:
            raise ValueError(f"NonFiniteGuard needs every_n_steps >= 1, got {every_n_steps}")
        self.mode = mode
        self.every_n_steps = every_n_steps
        self.warned = False
        # (batch_idx, epoch, batches trained) and the step's terms, still on the device
        self.queue: list[tuple[tuple[int, int, int], dict[str, torch.Tensor]]] = []

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.warned and self.mode == "warn":
            return
        terms = {name: value.detach() for name, value in step_terms(outputs).items()}
        if terms:
            loop = trainer.fit_loop.epoch_loop
            where = (batch_idx, trainer.current_epoch, loop._batches_that_stepped)
            self.queue.append((where, terms))
        if len(self.queue) >= self.every_n_steps:
            self.check()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint) -> None:
        self.check()  # raising here keeps the checkpoint from being written

    def check(self) -> None:
        """Checks the queued steps' terms (one host sync); raises or warns at the first bad
        step."""
        queue, self.queue = self.queue, []
        values = [value.reshape(-1) for _, terms in queue for value in terms.values()]
        if not values or bool(torch.isfinite(torch.cat(values)).all()):
            return
        for where, terms in queue:  # the first bad step
            bad = [
                f"{name} = {float(value)}"
                for name, value in terms.items()
                if not torch.isfinite(value).all()
            ]
            if bad:
                return self.report(where, bad)

    def report(self, where: tuple[int, int, int], bad: list[str]) -> None:
        """Raises ``NonFiniteLoss`` (or warns once) naming the step ``where`` and its ``bad``
        terms."""
        batch_idx, epoch, stepped = where
        message = (
            f"non-finite training loss at batch {batch_idx} of epoch {epoch} (batches trained: "
            f"{stepped}): {', '.join(bad)}; the checkpoints on disk are from before it"
        )
        if self.mode == "warn":
            self.warned = True
            rank_zero_warn(message)
            return
        raise NonFiniteLoss(message)


def step_terms(outputs) -> dict[str, torch.Tensor]:
    """The tensors a training step returned, by name (``loss`` named ``train/loss``)."""
    if isinstance(outputs, torch.Tensor):
        outputs = {"loss": outputs}
    if not isinstance(outputs, dict):
        return {}
    return {
        "train/loss" if name == "loss" else name: value
        for name, value in outputs.items()
        if isinstance(value, torch.Tensor)
    }
