import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical

from autoencoders import losses


def test_bernoulli_nll_matches_torch_distributions():
    logits, x = torch.randn(5, 1, 4, 4), torch.rand(5, 1, 4, 4).round()
    expected = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(losses.bernoulli_nll(logits, x), expected)


def test_squared_error_is_per_sample_sum():
    logits, x = torch.randn(3, 1, 5, 5), torch.rand(3, 1, 5, 5)
    result = losses.squared_error(logits, x)
    assert result.shape == (3,)
    expected = F.mse_loss(torch.sigmoid(logits), x, reduction="sum")
    torch.testing.assert_close(result.sum(), expected)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="bce.*mse"):
        losses.reconstruction(torch.zeros(1, 1), torch.zeros(1, 1), "l1")


def test_consistency_soft_targets_are_cross_entropy_with_probabilities():
    logits, target = torch.randn(6, 4), torch.softmax(torch.randn(6, 4), 1)
    result = losses.consistency(logits, target)
    assert result.shape == (6,)
    torch.testing.assert_close(result, F.cross_entropy(logits, target, reduction="none"))


def test_consistency_threshold_keeps_confident_hard_labels_only():
    logits = torch.randn(3, 3)
    target = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]])
    result = losses.consistency(logits, target, threshold=0.8)
    by_hand = F.cross_entropy(logits, torch.tensor([0, 1, 2]), reduction="none")
    torch.testing.assert_close(result, by_hand * torch.tensor([1.0, 0.0, 1.0]))


def test_class_balance_is_the_kl_of_the_mean_prediction_to_uniform():
    evenly_spread = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(losses.class_balance(evenly_spread), torch.tensor(0.0))
    probs = torch.softmax(torch.randn(6, 3), 1)
    expected = torch.distributions.kl_divergence(
        Categorical(probs=probs.mean(0)), Categorical(probs=torch.full((3,), 1 / 3))
    )
    torch.testing.assert_close(losses.class_balance(probs), expected)
    one_class_missing = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # 0 log 0 = 0: finite
    torch.testing.assert_close(losses.class_balance(one_class_missing), torch.tensor(1.5).log())
