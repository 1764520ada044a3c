"""``python -m experiments {fit,validate,test,predict} --config <file or name>``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI

from autoencoders.callbacks import RNGState
from autoencoders.data import DataError

# torch 2.14 deprecates a pytree helper that Lightning 2.6 still calls on every batch.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

CONFIGS = Path(__file__).parent / "configs"


def resolve_config(value: str) -> str:
    """A config path as given when it exists, else ``experiments/configs/<name>[.yaml]``."""
    if Path(value).is_file():
        return value
    for candidate in (CONFIGS / value, CONFIGS / f"{value}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return value  # jsonargparse reports the missing file


def base_configs(path: str) -> list[str]:
    """The configs a variant is layered on, base first: a variant's ``# base: <name>`` line
    names the config whose values it changes (which may itself be a variant)."""
    if not Path(path).is_file():
        return []
    for line in Path(path).read_text().splitlines():
        if line.startswith("# base:"):
            base = resolve_config(line.removeprefix("# base:").strip())
            return [*base_configs(base), base]
    return []


def resolve_args(args: list[str]) -> tuple[list[str], str]:
    """Resolves every ``--config`` value, putting a variant's base configs before it; returns
    the new args and the last config's stem."""
    resolved, stem = [], "default"
    for i, arg in enumerate(args):
        if arg in ("--config", "-c"):
            continue
        if i > 0 and args[i - 1] in ("--config", "-c"):
            value = arg
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            resolved.append(arg)
            continue
        path = resolve_config(value)
        stem = Path(path).stem
        for config in [*base_configs(path), path]:
            resolved.append(f"--config={config}")
    return resolved, stem


class CLI(LightningCLI):
    """LightningCLI with three callbacks always on: a checkpoint of the best (lowest
    ``val/loss``) epoch, ``last.ckpt`` rewritten after every epoch, and the RNG states saved for
    exact resumption.

    ``last.ckpt`` has its own ``ModelCheckpoint`` (no monitor) because since Lightning 2.6
    ``save_last=True`` writes it only when a best checkpoint is saved at the same step, which
    makes it a copy of the best epoch.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(RNGState, "rng_state")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
                "last_checkpoint.filename": "last",
            }
        )

    def parse_arguments(self, parser, args) -> None:
        self.command_line = list(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """With ``--ckpt_path``, Lightning 2.6 puts the checkpoint's hyperparameters over the
        model's whole config, the command line included (Lightning-AI/pytorch-lightning#21455,
        open): ``test --ckpt_path C --model.init_args.tta_hflip=true`` would silently test
        without it. Here the ``--model...`` arguments of the command line are applied again, so
        they win over the checkpoint as they win over the config file."""
        subcommand = self.config.get("subcommand")
        overrides = model_arguments(self.command_line)
        if subcommand and overrides and self.config[subcommand].get("ckpt_path"):
            self.config = self.parser.parse_args([subcommand, *overrides], namespace=self.config)


def model_arguments(args: list[str]) -> list[str]:
    """The ``--model...`` arguments in ``args``, with their values."""
    found = []
    for i, arg in enumerate(args):
        if arg.startswith("--model"):
            found.append(arg)
            if "=" not in arg and i + 1 < len(args):
                found.append(args[i + 1])
    return found


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Builds the CLI from ``args`` (default: ``sys.argv``); TensorBoard logs go to
    ``runs/<config stem>/version_N`` unless the config names another logger."""
    from_command_line = args is None
    args, stem = resolve_args(sys.argv[1:] if from_command_line else list(args))
    if from_command_line:  # DDP re-launches sys.argv: keep the resolved config path there
        sys.argv[1:] = args
    logger = {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": stem, "default_hp_metric": False},
    }
    return CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        trainer_defaults={"logger": logger, "accelerator": "auto"},
        save_config_kwargs={"overwrite": True},
        args=None if from_command_line else args,
        run=run,
    )


if __name__ == "__main__":
    try:
        main()
    except DataError as err:
        sys.exit(f"error: {err}")
