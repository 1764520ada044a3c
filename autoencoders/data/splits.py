"""Seeded split helpers: pure functions of the targets, a count or fraction, and a seed."""

from __future__ import annotations

import torch
from torch import Tensor


def holdout_indices(n: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Splits ``range(n)`` into (kept, held-out) index tensors, ``size`` held out at random."""
    if not 0 <= size < n:
        raise ValueError(f"cannot hold out {size} of {n} examples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[size:].sort().values, perm[:size].sort().values


def labelled_indices(targets: Tensor, per_class: int, seed: int) -> Tensor:
    """Positions of ``per_class`` examples of every class, drawn at random (class-balanced)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in targets.unique():
        candidates = (targets == label).nonzero().flatten()
        if len(candidates) < per_class:
            raise ValueError(
                f"class {int(label)} has {len(candidates)} examples, fewer than {per_class}"
            )
        chosen.append(candidates[torch.randperm(len(candidates), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def fraction_indices(n: int, fraction: float, seed: int) -> Tensor:
    """Positions of a random ``fraction`` of ``range(n)`` (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"labeled_fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def balanced_indices(targets: Tensor, seed: int) -> Tensor:
    """Positions that keep every example of the rarest class and as many of each other class."""
    generator = torch.Generator().manual_seed(seed)
    labels = targets.unique()
    count = min(int((targets == label).sum()) for label in labels)
    chosen = []
    for label in labels:
        candidates = (targets == label).nonzero().flatten()
        chosen.append(candidates[torch.randperm(len(candidates), generator=generator)[:count]])
    return torch.cat(chosen).sort().values
