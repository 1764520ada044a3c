"""Training-time batch augmentations."""

import pytest
import torch

from autoencoders.augment import Augment, random_hflip, random_rotate_scale, random_shift


def test_random_shift_moves_whole_pixels_within_range():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1
    shifted = random_shift(x, max_shift=2)
    positions = torch.stack([torch.nonzero(img[0])[0] for img in shifted])
    assert shifted.sum((1, 2, 3)).eq(1).all(), "one pixel stays one pixel"
    assert (positions - 14).abs().max() <= 2
    assert len({tuple(p) for p in positions.tolist()}) > 10, "offsets differ per image"


def test_random_hflip_mirrors_about_half_the_images():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 28, 28)
    flipped = random_hflip(x)
    mirrored = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(x, flipped, strict=True)])
    unchanged = torch.tensor([torch.equal(a, b) for a, b in zip(x, flipped, strict=True)])
    assert (mirrored ^ unchanged).all(), "each image is either kept or mirrored"
    assert 150 < mirrored.sum() < 250


def test_augment_without_options_returns_the_batch():
    x = torch.rand(4, 1, 28, 28)
    assert Augment()(x) is x


def test_augment_composes_its_parts_in_order_with_a_new_draw_per_image():
    x = torch.rand(64, 1, 28, 28)
    policy = Augment(max_shift=2, max_degrees=15, max_scale=0.1, hflip=True)
    torch.manual_seed(0)
    view = policy(x)
    torch.manual_seed(0)
    expected = random_hflip(random_shift(random_rotate_scale(x, 15, 0.1), 2))
    torch.testing.assert_close(view, expected)
    assert len({round(float(v.sum()), 3) for v in view}) == 64, "each image its own draw"
    torch.manual_seed(1)
    assert not torch.equal(policy(x), view), "and a new draw per call"


@pytest.mark.parametrize(
    "options", [{"max_shift": -1}, {"max_degrees": -5}, {"max_scale": 1.0}, {"max_scale": -0.1}]
)
def test_augment_rejects_values_that_make_no_sense(options):
    with pytest.raises(ValueError, match="Augment needs"):
        Augment(**options)


def test_random_rotate_scale_at_its_extremes(monkeypatch):
    x = torch.rand(3, 1, 28, 28)
    monkeypatch.setattr(torch, "rand", lambda n, device=None: torch.ones(n))  # the maxima
    quarter_turn = random_rotate_scale(x, max_degrees=90, max_scale=0)
    torch.testing.assert_close(quarter_turn, x.rot90(-1, dims=(-2, -1)), atol=1e-5, rtol=0)
    # A blob at the centre grows by the scale factor in each direction: mass times 1.5^2.
    blob = torch.zeros(1, 1, 28, 28)
    blob[..., 12:16, 12:16] = 1
    grown = random_rotate_scale(blob, max_degrees=0, max_scale=0.5)
    assert grown.sum() / blob.sum() == pytest.approx(1.5**2, rel=0.05)
