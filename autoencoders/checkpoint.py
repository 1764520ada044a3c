"""Checkpoints: written whole or not at all, read without unpickling code, of the right family."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its own folder and renames it over the
    old one (``os.replace``, atomic on one file system): a run killed while saving leaves the
    previous ``last.ckpt`` whole. Lightning's own save stages the file in the system's temp
    folder, and moving it from there is a copy when that folder is another file system."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        torch.save(checkpoint, partial)
        os.replace(partial, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a Lightning checkpoint, loaded weights-only (no code is unpickled).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a checkpoint (one line naming it and why).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises unpickling: not for us
        raise ValueError(
            f"{path} is not a checkpoint this project wrote (no weights-only torch file; "
            "checkpoints are never loaded with code)"
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a checkpoint this project wrote ({first})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{path} is not a checkpoint this project wrote (no state_dict)")
    return state


def check_family(path: str | Path, state: dict[str, Any], wanted: str, hint: str = "") -> None:
    """Raises ``ValueError`` (ending with ``hint``) when the checkpoint ``state`` read from
    ``path`` is of another model class than ``wanted`` (a class path or a class name);
    checkpoints that do not name their class pass."""
    saved = (state.get("hyper_parameters") or {}).get("_class_path")
    saved, wanted = (name.rsplit(".", 1)[-1] for name in (saved or wanted, wanted))
    if saved != wanted:
        raise ValueError(f"{path} is a checkpoint of {saved}, not of {wanted}{hint}")
