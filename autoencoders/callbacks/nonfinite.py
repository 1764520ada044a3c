"""Stop (or warn) at the first non-finite training loss, naming the step and the term."""

from __future__ import annotations

from typing import Literal

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or infinite."""


class NonFiniteGuard(Callback):
    """After every ``every_n_steps`` training batches, checks the loss and the terms that the
    training step returned (every term of every phase: ``train/disc_z``, ``train/gen``,
    ``train/cls``...). At the first NaN or infinite one, ``mode="stop"`` raises
    ``NonFiniteLoss`` naming the batch, the epoch and the terms, before any checkpoint of the
    poisoned weights is written, so the last good checkpoint stays as it was; ``mode="warn"``
    warns once and trains on.

    The check is one host sync: on a GPU, ``every_n_steps`` above 1 trades how soon a fault is
    caught for speed.

    Args:
        mode: ``stop`` or ``warn``.
        every_n_steps: batches between checks.
    """

    def __init__(self, mode: Literal["stop", "warn"] = "stop", every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"NonFiniteGuard needs every_n_steps >= 1, got {every_n_steps}")
        self.mode = mode
        self.every_n_steps = every_n_steps
        self.warned = False

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % self.every_n_steps or (self.warned and self.mode == "warn"):
            return
        terms = step_terms(outputs)
        if not terms:
            return
        finite = torch.stack([torch.isfinite(v).all() for v in terms.values()])
        if bool(finite.all()):
            return
        bad = [
            f"{name} = {float(value)}"
            for (name, value), ok in zip(terms.items(), finite, strict=True)
            if not ok
        ]
        message = (
            f"non-finite training loss at batch {batch_idx} of epoch {trainer.current_epoch} "
            f"(batches trained: {trainer.fit_loop.epoch_loop._batches_that_stepped}): "
            f"{', '.join(bad)}; the checkpoints on disk are from before it"
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
