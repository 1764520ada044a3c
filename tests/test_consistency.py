"""The consistency component that the AAE and the SSVAE share."""

import pytest
import torch
import torch.nn.functional as F

from autoencoders import losses
from autoencoders.consistency import Consistency


def test_soft_targets_are_the_weighted_cross_entropy_with_the_clean_probabilities():
    view, clean = torch.randn(6, 4), torch.randn(6, 4)
    loss = Consistency(weight=2.5, threshold=0.0)(view, clean)
    expected = 2.5 * F.cross_entropy(view, clean.softmax(1))
    torch.testing.assert_close(loss, expected)


def test_no_gradient_flows_into_the_target():
    view, clean = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    Consistency(threshold=0.0)(view, clean).backward()
    assert clean.grad is None and view.grad.abs().sum() > 0


def test_threshold_keeps_confident_hard_labels_only():
    view = torch.randn(3, 3)
    clean = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 9.0]]).log_softmax(1)
    loss = Consistency(weight=1.0, threshold=0.8)(view, clean)
    by_hand = F.cross_entropy(view, torch.tensor([0, 1, 2]), reduction="none")
    torch.testing.assert_close(loss, (by_hand * torch.tensor([1.0, 0.0, 1.0])).mean())
    uniform = torch.zeros(3, 3)  # probability 1/3 < 0.8 everywhere: no target at all
    assert Consistency(threshold=0.8)(view, uniform) == 0


def test_balance_is_the_weighted_kl_of_the_mean_prediction_to_uniform():
    probs = torch.randn(8, 5).softmax(1)
    expected = 3.0 * losses.class_balance(probs)
    torch.testing.assert_close(Consistency(balance_weight=3.0).balance(probs), expected)
    assert Consistency().balance(probs) == 0  # off by default


@pytest.mark.parametrize(
    "options", [{"threshold": 1.5}, {"threshold": -0.1}, {"weight": -1}, {"balance_weight": -1}]
)
def test_values_that_make_no_sense_are_refused(options):
    with pytest.raises(ValueError, match="Consistency needs"):
        Consistency(**options)
