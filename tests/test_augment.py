"""Training-time batch augmentations."""

import pytest
import torch

from autoencoders.augment import (
    augment,
    random_cutout,
    random_elastic,
    random_hflip,
    random_rotate_scale,
    random_shift,
)


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
    assert augment(x) is x


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


def test_random_cutout_blanks_one_square_per_image():
    torch.manual_seed(0)
    x = torch.ones(200, 1, 28, 28)
    cut = random_cutout(x, size=8)
    blanked = (cut == 0).sum((1, 2, 3))
    assert blanked.max() == 64, "an 8x8 square inside the image"
    assert blanked.min() > 0, "every image loses some pixels"
    assert (blanked < 64).any(), "squares near the border are clipped"
    for img in cut[:20, 0]:  # the zeros form one axis-aligned rectangle
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert height <= 8 and width <= 8 and height * width == len(rows)
    assert len({tuple(torch.nonzero(img[0] == 0)[0].tolist()) for img in cut}) > 50


def test_random_elastic_moves_pixels_by_smooth_fields_of_size_alpha():
    # On a horizontal ramp, the value read at a pixel tells how far it moved along x.
    columns = torch.arange(28.0).expand(28, 28)
    ramp = columns.expand(64, 1, 28, 28) / 27
    inner = (slice(None), 0, slice(8, 20), slice(8, 20))  # far from the zero-filled border
    moves = {}
    for alpha in (17.0, 34.0):
        torch.manual_seed(1)
        moves[alpha] = (random_elastic(ramp, alpha, sigma=4.0) * 27 - columns)[inner]
    rms = {alpha: dx.pow(2).mean().sqrt() for alpha, dx in moves.items()}
    assert 0.5 < rms[34.0] < 4, "Simard's setting moves pixels by a pixel or two"
    torch.testing.assert_close(moves[34.0], 2 * moves[17.0], atol=1e-4, rtol=1e-4)
    neighbours = (moves[34.0][:, :, 1:] - moves[34.0][:, :, :-1]).abs().mean()
    assert neighbours < 0.2 * moves[34.0].abs().mean(), "the field is smooth"
    per_image = moves[34.0].mean((1, 2))
    assert per_image.std() > 0.1, "each image gets its own field"
