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


def test_the_view_is_the_models_unless_the_component_has_its_own_policy():
    from autoencoders.augment import Augment

    clean, training_view = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    assert Consistency().view(clean, training_view) is training_view
    own = Consistency(augment=Augment(max_shift=2))
    torch.manual_seed(0)
    view = own.view(clean, training_view)
    torch.manual_seed(0)
    torch.testing.assert_close(view, Augment(max_shift=2)(clean))
    assert not torch.equal(view, clean), "a shifted view of the clean images"


def test_the_aae_trains_on_clean_images_and_the_component_on_its_view(
    fake_root, monkeypatch, tmp_path
):
    """Clustering: with the component's own policy and none on the model, the reconstruction
    and adversarial phases see the clean batch, the consistency term its augmented view."""
    from tests.helpers import build, tiny_trainer

    augment = ["--model.init_args.consistency.init_args.augment=autoencoders.augment.Augment",
               "--model.init_args.consistency.init_args.augment.init_args.max_shift=2",
               "--model.init_args.consistency.init_args.weight=1.0"]  # fmt: skip
    model, datamodule = build("aae_unsupervised", fake_root, *augment)
    seen = {}

    def recorded(name):
        method = getattr(model, name)

        def wrapper(*args):
            seen[name] = args
            return method(*args)

        return wrapper

    for name in ("reconstruction_loss", "label_loss"):
        monkeypatch.setattr(model, name, recorded(name))
    tiny_trainer(tmp_path, limit_val_batches=0).fit(model, datamodule=datamodule)
    (x,), (_, view, clean) = seen["reconstruction_loss"], seen["label_loss"]
    assert torch.equal(x, clean) and not torch.equal(view, clean)
