"""A run's main hyper-parameters against its test metrics, for TensorBoard's HPARAMS tab."""

from __future__ import annotations

import os

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams

# Networks (encoder, decoder, discriminators...) show their class and code size only, optimizers
# their class and learning rate: their other arguments rarely vary and would bury the ones that do.
NETWORK_KEYS = {"latent_dim"}
OPTIMIZER_KEYS = {"lr"}
SKIPPED = {"download", "root", "path"}  # where the data lives, not how the run trained


def main_hparams(hparams: dict, prefix: str = "") -> dict[str, float | int | str | bool]:
    """The settings of a module's (or data module's) saved hyper-parameters, flattened to
    ``"consistency/threshold"``-style keys: numbers, strings, booleans and short lists; an
    injected part's class name under its argument's key, with its own settings (for networks
    the code size, for optimizers the learning rate); ``None`` left out."""
    flat: dict = {}
    for key, value in hparams.items():
        if key.startswith("_") or key in SKIPPED or value is None:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "class_path" in value:
            class_path = value["class_path"]
            flat[name] = class_path.rsplit(".", 1)[-1]
            args = value.get("init_args") or {}
            if class_path.startswith("torch.optim"):
                args = {k: v for k, v in args.items() if k in OPTIMIZER_KEYS}
            elif class_path.startswith("autoencoders.nn"):
                args = {k: v for k, v in args.items() if k in NETWORK_KEYS}
            flat |= main_hparams(args, f"{name}/")
        elif isinstance(value, dict):
            flat |= main_hparams(value, f"{name}/")
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
    return flat


class HparamsSummary(Callback):
    """After test, writes the run's main hyper-parameters (the model's and the data module's,
    ``main_hparams``, plus the ``seed_everything`` seed) with every ``test/*`` metric to
    TensorBoard's HPARAMS tab, so that runs of one config compare at a glance (one row per run,
    or per ``test`` sub-run of a checkpoint). Runs never tested are not listed there."""

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        logged = trainer.callback_metrics.items()
        metrics = {k: float(v) for k, v in logged if k.startswith("test/")}
        if not loggers or not metrics:
            return
        params = {"model": type(pl_module).__name__, **main_hparams(dict(pl_module.hparams))}
        if trainer.datamodule is not None:
            params |= main_hparams(dict(trainer.datamodule.hparams), "data/")
        if "PL_GLOBAL_SEED" in os.environ:  # set by seed_everything
            params["seed_everything"] = int(os.environ["PL_GLOBAL_SEED"])
        # The summaries alone: the metrics are already scalars of this run, and the logger's
        # own log_hyperparams would log them again and rewrite hparams.yaml with these keys.
        for summary in hparams(params, metrics):
            loggers[0].experiment._get_file_writer().add_summary(summary)
        loggers[0].experiment.flush()
