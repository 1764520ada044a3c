"""A callback for the non-finite-loss tests: turns a submodule's weights into NaN at a batch."""

import torch
from pytorch_lightning import Callback


class Poison(Callback):
    def __init__(self, module: str, epoch: int = 1, batch: int = 1) -> None:
        self.module, self.epoch, self.batch = module, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            with torch.no_grad():
                for parameter in pl_module.get_submodule(self.module).parameters():
                    parameter.fill_(float("nan"))
