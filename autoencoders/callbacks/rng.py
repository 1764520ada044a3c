"""Random-number-generator states in checkpoints, so that a resumed run continues exactly."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback


class RNGState(Callback):
    """Saves the Python, NumPy, torch (and CUDA) generator states in every checkpoint and
    restores them on resume: dropout masks, input noise and dynamic binarization continue the
    uninterrupted run's random stream. Under DDP each rank restores rank 0's states."""

    def state_dict(self) -> dict[str, Any]:
        state = {
            "python": random.getstate(),
            "numpy": numpy_state_to_torch(np.random.get_state()),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        np.random.set_state(numpy_state_from_torch(state_dict["numpy"]))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def numpy_state_to_torch(state: tuple) -> dict[str, Any]:
    """NumPy's legacy RNG state with its key array as a tensor (checkpoints load weights-only)."""
    name, keys, pos, has_gauss, gauss = state
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def numpy_state_from_torch(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]
