import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli

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
