"""Opt-in ``torch.compile`` of a model's networks, for any family."""

from __future__ import annotations

from pytorch_lightning import Callback


class Compile(Callback):
    """Compiles each network of the model (its child modules with parameters: encoder, decoder,
    discriminators, heads) with ``torch.compile`` when a stage starts. Each network is compiled
    in place (``nn.Module.compile``): checkpoints keep their keys and every optimizer, manual
    ones included, steps the same parameters. Opt in with
    ``--trainer.callbacks+=autoencoders.callbacks.Compile``.

    Same losses as eager on CPU (tested); the first batches wait for compilation. On this
    project's 2-core CPU it is slower than eager (BENCHMARKS.md): it is meant for GPUs.

    Args:
        mode: ``torch.compile``'s mode (``None``, ``"reduce-overhead"``, ``"max-autotune"``).
        dynamic: ``torch.compile``'s ``dynamic`` (``None``: dynamic after a second shape).
    """

    def __init__(self, mode: str | None = None, dynamic: bool | None = None) -> None:
        self.mode, self.dynamic = mode, dynamic

    def setup(self, trainer, pl_module, stage: str) -> None:
        for network in pl_module.children():
            if next(network.parameters(), None) is not None:
                network.compile(mode=self.mode, dynamic=self.dynamic)
