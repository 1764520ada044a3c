"""Shared test helpers: the shipped configs and models built from them the way the CLI does."""

from __future__ import annotations

from pathlib import Path

from experiments.__main__ import CONFIGS, main

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
CONFIG_IDS = [c.stem for c in CONFIG_FILES]


def build(config: str | Path, root: str, *overrides: str):
    """The model and data module of a config, instantiated by the CLI without running it."""
    cli = main(["--config", str(config), "--data.root", root, *overrides], run=False)
    return cli.model, cli.datamodule
