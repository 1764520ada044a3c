"""Per-sample losses: every function returns one value per example, ``Tensor[B]`` (except
``class_balance``, a property of a whole batch).

Terms are summed over all non-batch dimensions; a LightningModule reduces them once with
``.mean()``. Decoders return logits, so image losses take logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_sample(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """Negative log-likelihood of ``x`` in ``[0, 1]`` under Bernoulli(sigmoid(logits)): ``[B]``."""
    return _per_sample(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def squared_error(logits: Tensor, x: Tensor) -> Tensor:
    """Squared error between ``sigmoid(logits)`` and ``x``, summed per example: ``[B]``."""
    return _per_sample((torch.sigmoid(logits) - x).square())


RECONSTRUCTION = {"bce": bernoulli_nll, "mse": squared_error}


def reconstruction(logits: Tensor, x: Tensor, kind: str) -> Tensor:
    """Reconstruction loss by name (``"bce"`` or ``"mse"``), per example: ``[B]``."""
    if kind not in RECONSTRUCTION:
        raise ValueError(
            f"unknown reconstruction loss {kind!r}; choose one of {sorted(RECONSTRUCTION)}"
        )
    return RECONSTRUCTION[kind](logits, x)


def consistency(logits: Tensor, target: Tensor, threshold: float = 0.0) -> Tensor:
    """Cross-entropy of ``logits`` ``[B, K]`` against target class probabilities ``[B, K]`` (a
    prediction for another view of the same images; the caller detaches it), per example: ``[B]``.

    ``threshold = 0`` uses the probabilities as a soft target. ``threshold > 0`` uses the most
    probable class as a hard label where its probability is at least ``threshold`` and 0
    elsewhere (FixMatch's pseudo-labels, Sohn et al. 2020).
    """
    if threshold <= 0:
        return torch.sum(-target * F.log_softmax(logits, dim=1), dim=1)
    confidence, label = target.max(dim=1)
    return F.cross_entropy(logits, label, reduction="none") * (confidence >= threshold)


def class_balance(probs: Tensor) -> Tensor:
    """KL(mean prediction || uniform) of class probabilities ``[B, K]``: a scalar, 0 when the
    batch's predictions are spread evenly over the classes. The one batch-level term here: it is
    about the mix of classes in a batch, which no single example has. Against a classifier that
    neglects one class (the marginal matching an AAE's label discriminator does adversarially)."""
    mean = probs.mean(dim=0)
    return torch.special.xlogy(mean, mean * probs.shape[1]).sum()
