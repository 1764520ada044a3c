"""``python -m experiments {fit,validate,test,predict} --config <file or name>``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from autoencoders.callbacks import (
    CheckpointOnSIGTERM,
    HparamsSummary,
    NonFiniteGuard,
    NonFiniteLoss,
    RNGState,
)
from autoencoders.checkpoint import check_family, read_checkpoint
from autoencoders.data import DataError

# torch 2.14 deprecates a pytree helper that Lightning 2.6 still calls on every batch.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

# Lightning 2.6 warns at every step-interval save of a manual-optimization model that the
# checkpoint holds the weights after the step, which is what a resumed run needs.
warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")

CONFIGS = Path(__file__).parent / "configs"
ATOMIC_SAVE = [{"class_path": "autoencoders.checkpoint.AtomicCheckpointIO"}]


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


def git_commit() -> str | None:
    """The checked-out commit of this repository (``-dirty`` when tracked files differ from
    it), or ``None`` outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()  # fmt: skip

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


class SaveConfigAndCommit(SaveConfigCallback):
    """Lightning's ``config.yaml`` in the run folder, and beside it ``commit.txt``: the code's
    commit, so that a figure or a number drawn from the run later can say what trained it."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        commit = git_commit()
        log_dir = getattr(trainer.logger, "log_dir", None)  # rank 0 only: no broadcast here
        if commit and log_dir:
            Path(log_dir, "commit.txt").write_text(commit + "\n")


BAR_REFRESH = 10


class CLI(LightningCLI):
    """LightningCLI with six callbacks always on: a checkpoint of the best (lowest
    ``val/loss``) epoch, ``last.ckpt`` rewritten after every epoch (or every N optimizer steps
    with ``--last_checkpoint.every_n_train_steps N``), the RNG states saved for exact
    resumption, ``last.ckpt`` written where a SIGTERM stopped the run, the HPARAMS summary of a
    tested run, and the stop at the first non-finite training loss (``--nonfinite.mode warn``
    trains on). Checkpoints are written atomically (``AtomicCheckpointIO``).

    ``last.ckpt`` has its own ``ModelCheckpoint`` (no monitor) because since Lightning 2.6
    ``save_last=True`` writes it only when a best checkpoint is saved at the same step, which
    makes it a copy of the best epoch.
    """

    def __init__(self, *args, args_: list[str] | None = None, **kwargs) -> None:
        self.command_line = list(sys.argv[1:] if args_ is None else args_)
        super().__init__(*args, args=args_, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """Only the subcommand on the command line gets its parser (building all four took a
        second of every run's start); without one, ``--help`` lists them all."""
        every = LightningCLI.subcommands()
        first = self.command_line[0] if self.command_line else None
        return {first: every[first]} if first in every else every

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(RNGState, "rng_state")
        parser.add_lightning_class_args(HparamsSummary, "hparams_summary")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        parser.add_lightning_class_args(CheckpointOnSIGTERM, "sigterm")
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

    def instantiate_trainer(self, **kwargs):
        """The progress bar redraws every ``BAR_REFRESH`` batches (Lightning's redraws every
        batch: about 2 ms of host time a batch here, and on a GPU each redraw waits for the
        device to read the loss). A progress bar in the config's callbacks, or
        ``--trainer.enable_progress_bar=false``, is left as it is."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        own_bar = any(isinstance(callback, ProgressBar) for callback in callbacks)
        if config.get("enable_progress_bar") is not False and not own_bar:
            kwargs["callbacks"] = [*callbacks, TQDMProgressBar(refresh_rate=BAR_REFRESH)]
        return super().instantiate_trainer(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:  # before Lightning reads the checkpoint's hyperparameters
            check_checkpoint(self.config[subcommand].get("ckpt_path"), self.config[subcommand])

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


def check_checkpoint(path: str | None, config) -> None:
    """Fails in one line, before anything is built or written, when ``--ckpt_path`` names no
    file, a file that is not a checkpoint, or a checkpoint of another model family than the
    config's (Lightning's own names ``last`` / ``best`` / ``hpc`` are left to Lightning)."""
    if path is None or path in ("last", "best", "hpc", "registry"):
        return
    state = read_checkpoint(path)
    if config.get("model"):
        hint = ": give the config it was trained with"
        check_family(path, state, config.model.class_path, hint)


def one_line(err: BaseException) -> str:
    """The message of the innermost cause of ``err`` (our own check, under jsonargparse's and
    Lightning's wrappers), its lines joined into one."""
    while True:
        inner = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
        if inner is None:
            break
        err = inner
    text = " ".join(line.strip() for line in str(err).strip().splitlines())
    return text or type(err).__name__


USER_ERRORS = (DataError, NonFiniteLoss, ValueError, FileNotFoundError)


def cli_main(args: list[str] | None = None) -> None:
    """``main`` for the command line: a bad input ends in one ``error:`` line and exit code 1
    (``AUTOENCODERS_TRACEBACK=1`` shows the whole traceback instead)."""
    try:
        main(args)
    except USER_ERRORS as err:
        if os.environ.get("AUTOENCODERS_TRACEBACK"):
            raise
        sys.exit(f"error: {one_line(err)}")
    except SIGTERMException:  # Lightning's stop exits 0, as if the run had finished
        print("error: stopped by SIGTERM between two batches, last.ckpt written there; "
              "go on with: fit --ckpt_path last", file=sys.stderr)  # fmt: skip
        sys.exit(128 + signal.SIGTERM)


def model_arguments(args: list[str]) -> list[str]:
    """The ``--model...`` arguments in ``args``, with their values."""
    found = []
    for i, arg in enumerate(args):
        if arg.startswith("--model"):
            found.append(arg)
            if "=" not in arg and i + 1 < len(args):
                found.append(args[i + 1])
    return found


def ckpt_path_arg(args: list[str]) -> tuple[int, str] | None:
    """The position and value of ``--ckpt_path`` in ``args``."""
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            return i + 1, args[i + 1]
        if arg.startswith("--ckpt_path="):
            return i, arg.split("=", 1)[1]
    return None


def resolve_last(args: list[str], stem: str) -> list[str]:
    """``fit --ckpt_path last`` names the newest ``runs/<stem>/version_*/checkpoints/last.ckpt``
    (Lightning would look only in the new run's empty folder); left as it is when there is
    none, so that Lightning starts from scratch with a warning (a job script can always pass
    ``last``)."""
    found = ckpt_path_arg(args)
    if not args or args[0] != "fit" or found is None or found[1] != "last":
        return args
    candidates = Path("runs", stem).glob("version_*/checkpoints/last.ckpt")
    newest = max(candidates, key=lambda path: path.stat().st_mtime, default=None)
    if newest is None:
        return args
    i, _ = found
    return [*args[:i], f"--ckpt_path={newest}" if args[i].startswith("--") else str(newest),
            *args[i + 1 :]]  # fmt: skip


def checkpoint_run(args: list[str]) -> Path | None:
    """The run folder (``<save_dir>/<name>/version_N``) of the ``--ckpt_path`` in ``args``,
    when that checkpoint lies in one's ``checkpoints/``; ``None`` for checkpoints from
    elsewhere."""
    found = ckpt_path_arg(args)
    if not args or found is None or not Path(found[1]).is_file():
        return None
    folder = Path(found[1]).parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        return folder.parent
    return None


def logger_for(args: list[str], stem: str) -> dict:
    """TensorBoard logs go to ``runs/<config stem>/version_N``. A ``fit`` that resumes from a
    run's checkpoint continues that run (its curves, its ``checkpoints/``); a ``validate`` /
    ``test`` / ``predict`` of a run's checkpoint goes into that run as its sub-run
    ``<command>/`` (the next free ``<command>_K/`` when that exists), so its numbers, figures
    and ``predictions.csv`` sit beside the curves they conclude."""
    init = {"save_dir": "runs", "name": stem, "default_hp_metric": False}
    run = checkpoint_run(args)
    if run is not None:
        init = {"save_dir": str(run.parent.parent), "name": run.parent.name,
                "version": run.name, "default_hp_metric": False}  # fmt: skip
    if run is not None and args[0] != "fit":
        sub_dir, k = args[0], 1
        while (run / sub_dir).exists():
            sub_dir, k = f"{args[0]}_{k}", k + 1
        init["sub_dir"] = sub_dir
    return {"class_path": "pytorch_lightning.loggers.TensorBoardLogger", "init_args": init}


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Builds the CLI from ``args`` (default: ``sys.argv``); logs go where ``logger_for`` says
    unless the config names another logger."""
    from_command_line = args is None
    args, stem = resolve_args(sys.argv[1:] if from_command_line else list(args))
    args = resolve_last(args, stem)
    if from_command_line:  # DDP re-launches sys.argv: keep the resolved config path there
        sys.argv[1:] = args
    logger = logger_for(args, stem)
    return CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        trainer_defaults={"logger": logger, "accelerator": "auto", "plugins": ATOMIC_SAVE},
        save_config_callback=SaveConfigAndCommit,
        save_config_kwargs={"overwrite": True},
        args_=None if from_command_line else args,
        run=run,
    )


if __name__ == "__main__":
    cli_main()
