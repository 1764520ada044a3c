"""The unlabelled terms that the semi-supervised models share (AAE, SSVAE): pseudo-label
consistency (FixMatch, Sohn et al. 2020) and class balance (CatGAN's marginal entropy term,
Springenberg 2016: no class is dropped or swallows the rest), one injected component."""

from __future__ import annotations

from torch import Tensor, nn

from autoencoders import losses


class Consistency(nn.Module):
    """Weighted consistency and class-balance terms on an unlabelled batch.

    The view it trains on is the model's own training view (its ``augment`` policy, plus input
    noise where the model adds it), or, with ``augment``, this component's own view of the clean
    images (so a model can train its other terms on clean images, e.g. for clustering); the
    target is the model's prediction for the clean images.

    Args:
        weight: weight of the consistency term (0: off, only the balance term).
        threshold: 0 uses the clean prediction's probabilities as a soft target; above 0, its
            most probable class is a hard target where its probability reaches ``threshold``,
            and other images add nothing.
        balance_weight: weight of the class-balance term (0: off).
        augment: the policy that makes the view from the clean images (default: the model's
            training view).
    """

    def __init__(
        self,
        weight: float = 1.0,
        threshold: float = 0.95,
        balance_weight: float = 0.0,
        augment: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.augment = augment
        if weight < 0 or balance_weight < 0 or not 0 <= threshold <= 1:
            raise ValueError(
                "Consistency needs weight >= 0, balance_weight >= 0 and 0 <= threshold <= 1; "
                f"got {weight}, {balance_weight}, {threshold}"
            )
        self.weight, self.threshold, self.balance_weight = weight, threshold, balance_weight

    def view(self, clean: Tensor, training_view: Tensor) -> Tensor:
        """The images the consistency term trains on: this component's view of ``clean`` when it
        has an ``augment`` policy, else the model's ``training_view``."""
        return training_view if self.augment is None else self.augment(clean)

    def forward(self, view_logits: Tensor, clean_logits: Tensor) -> Tensor:
        """``weight`` times the mean consistency loss of ``view_logits`` ``[B, K]`` against the
        prediction ``clean_logits`` ``[B, K]`` (detached here)."""
        target = clean_logits.detach().softmax(dim=1)
        return self.weight * losses.consistency(view_logits, target, self.threshold).mean()

    def balance(self, probs: Tensor) -> Tensor:
        """``balance_weight`` times KL(mean class probabilities || uniform) of the batch."""
        return self.balance_weight * losses.class_balance(probs)
