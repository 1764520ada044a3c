"""NELBO and IWAE evaluation for models whose evaluation steps return ``rec`` and ``kl``."""

from __future__ import annotations

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn
from torchmetrics import MeanMetric

from autoencoders.data.base import is_training_pass


class NELBOMetrics(Callback):
    """Logs the negative ELBO and its two terms on validation and test, and the IWAE bound on
    test: ``{stage}/nelbo``, ``{stage}/rec``, ``{stage}/kl`` and ``test/nll_iwae``, in nats per
    image, averaged over the whole split (torchmetrics, so correct under DDP).

    ``rec`` and ``kl`` are the per-image terms that the model's validation and test steps return
    (the same z samples as ``{stage}/loss``); ``nelbo = rec + kl`` always (beta = 1), whatever
    beta the model trains with. The IWAE bound needs more than the step computed: it calls the
    model's ``log_likelihood(x, k)`` on every test batch, k importance samples per image.

    Args:
        iwae_samples: importance samples k of ``test/nll_iwae = -log_likelihood(x, k)``
            (Burda et al. 2016); 0 turns it off.
    """

    def __init__(self, iwae_samples: int = 0) -> None:
        self.iwae_samples = iwae_samples
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict({name: MeanMetric() for name in ("nelbo", "rec", "kl")})
                for stage in ("val", "test")
            }
        )
        self.metrics["test"]["nll_iwae"] = MeanMetric()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.iwae_samples > 0 and not hasattr(pl_module, "log_likelihood"):
            raise ValueError(
                f"NELBOMetrics(iwae_samples={self.iwae_samples}) needs a model with "
                f"log_likelihood(x, k); {type(pl_module).__name__} has none: set iwae_samples: 0"
            )
        self.metrics.to(pl_module.device)

    @torch.no_grad()
    def _update(self, pl_module: LightningModule, outputs, batch, stage: str) -> None:
        if not isinstance(outputs, dict) or not {"rec", "kl"} <= outputs.keys():
            raise RuntimeError(
                "NELBOMetrics reads the 'rec' and 'kl' that validation_step and test_step "
                "return; this model's steps return none"
            )
        metrics = self.metrics[stage]
        metrics["rec"].update(outputs["rec"])
        metrics["kl"].update(outputs["kl"])
        metrics["nelbo"].update(outputs["rec"] + outputs["kl"])
        if stage == "test" and self.iwae_samples > 0:
            metrics["nll_iwae"].update(-pl_module.log_likelihood(batch[0], self.iwae_samples))

    def _log(self, pl_module: LightningModule, stage: str) -> None:
        for name, metric in self.metrics[stage].items():
            if metric.update_called:
                pl_module.log(f"{stage}/{name}", metric.compute(), prog_bar=name == "nelbo")
            metric.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if not is_training_pass(trainer, dl_idx):
            self._update(pl_module, outputs, batch, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._update(pl_module, outputs, batch, "test")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "test")
