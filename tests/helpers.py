"""Shared test helpers: the shipped configs, models built from them the way the CLI does, and
the arguments of a short run on the fake data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pytorch_lightning import Trainer

from experiments.__main__ import CONFIGS, base_configs, main, resolve_config

ROOT = Path(__file__).parents[1]
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
CONFIG_IDS = [c.stem for c in CONFIG_FILES]


def pretrained(config: str | Path, train: Callable[[str], str]) -> list[str]:
    """For configs that load a pre-trained encoder: the override pointing at a checkpoint of the
    autoencoder config their ``encoder_checkpoint`` names (``runs/<config>/...``), made by
    ``train(config)`` (the ``encoder_checkpoint`` fixture)."""
    path = resolve_config(str(config))
    files = [*base_configs(path), path] if Path(path).is_file() else []
    text = "".join(Path(f).read_text() for f in files)
    names = re.findall(r"encoder_checkpoint: runs/(\w+)/", text)  # the variant's comes last
    return [f"--model.encoder_checkpoint={train(names[-1])}"] if names else []


def build(config: str | Path, root: str, *overrides: str):
    """The model and data module of a config, instantiated by the CLI without running it."""
    cli = main(["--config", str(config), "--data.root", root, *overrides], run=False)
    return cli.model, cli.datamodule


def short(root: str, *extra: str, train_batches: int = 3) -> list[str]:
    """CLI arguments for one short epoch on the fake data (``extra`` comes last and wins)."""
    return [
        f"--data.root={root}", "--data.val_size=1000", "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={train_batches}", "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false", *extra,
    ]  # fmt: skip


def run_module(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m experiments ARGS`` in a fresh process (what a user types); ``env`` adds
    environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip


def tiny_trainer(tmp_path, **kwargs) -> Trainer:
    """A quiet Trainer for one step (``kwargs`` override): no logger, checkpoints or bars."""
    defaults = dict(
        max_steps=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return Trainer(**{**defaults, **kwargs})
