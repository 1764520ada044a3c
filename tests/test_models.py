"""One contract suite over every model family, built from the shipped configs."""

import pytest
import torch
from pytorch_lightning import Callback

from autoencoders.models import Autoencoder
from autoencoders.nn import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from tests.helpers import CONFIG_FILES, CONFIG_IDS, build, pretrained, tiny_trainer


def first_images(datamodule, n: int = 8) -> torch.Tensor:
    datamodule.setup("fit")
    x, _ = next(iter(datamodule.val_dataloader()))
    return x[:n]


class ParametersAtTrainStart(Callback):
    """The parameters once training starts (after a pre-trained encoder was loaded)."""

    def on_train_start(self, trainer, pl_module):
        self.parameters = {k: v.detach().clone() for k, v in pl_module.named_parameters()}


@pytest.fixture(params=CONFIG_FILES, ids=CONFIG_IDS)
def family(request, fake_root, encoder_checkpoint):
    return build(request.param, fake_root, *pretrained(request.param, encoder_checkpoint))


def test_protocols_return_the_right_shapes(family):
    model, datamodule = family
    x = first_images(datamodule)
    model.eval()
    protocols = [p for p in ("reconstruct", "embed", "anomaly_score", "classify", "elbo_terms")
                 if hasattr(model, p)]  # fmt: skip
    assert "embed" in protocols and len(protocols) >= 2
    with torch.no_grad():
        codes = model.embed(x)
        assert codes.dim() == 2 and codes.shape[0] == len(x)
        if hasattr(model, "reconstruct"):
            images = model.reconstruct(x)
            assert images.shape == x.shape and images.min() >= 0 and images.max() <= 1
        if hasattr(model, "anomaly_score"):
            if model.hparams.get("score_standardize"):  # statistics of the healthy images first
                model.fit_score_statistics(datamodule.train_dataloader())
            score = model.anomaly_score(x)
            assert score.shape == (len(x),) and torch.isfinite(score).all()
        if hasattr(model, "classify"):
            logits = model.classify(x)
            assert logits.dim() == 2 and logits.shape[0] == len(x)
        if hasattr(model, "elbo_terms"):
            terms = model.elbo_terms(x)
            assert terms["rec"].shape == terms["kl"].shape == (len(x),)
            assert (terms["rec"] > 0).all() and torch.isfinite(terms["kl"]).all()


def test_one_step_changes_every_trainable_parameter_and_logs_losses(family, tmp_path):
    """Trainable parameters all move after one step; frozen ones (the supervised-only SSVAE's
    encoder and decoder, a frozen pre-trained encoder, the stacked layers outside the current
    pre-training stage) do not."""
    model, datamodule = family
    snapshot = ParametersAtTrainStart()
    trainer = tiny_trainer(tmp_path, callbacks=[snapshot])
    trainer.fit(model, datamodule=datamodule)
    before = snapshot.parameters
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p)
        assert moved == p.requires_grad, f"{name}: requires_grad={p.requires_grad}, moved={moved}"
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    trainer.validate(model, datamodule=datamodule, verbose=False)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_checkpoint_round_trip(family, tmp_path):
    model, datamodule = family
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=datamodule)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path)
    x = first_images(datamodule)
    model.eval(), loaded.eval()
    output = "reconstruct" if hasattr(model, "reconstruct") else "classify"
    with torch.no_grad():
        torch.testing.assert_close(getattr(loaded, output)(x), getattr(model, output)(x))
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hparams["_class_path"].endswith(f".{type(model).__name__}")
    if "encoder" in hparams:  # injected networks are stored as class paths
        assert hparams["encoder"]["class_path"].startswith("autoencoders.nn.")


def test_denoising_reconstructs_the_clean_target():
    model = Autoencoder(MLPEncoder(8, [32]), MLPDecoder(8, [32]), noise_std=0.5)
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(0)
    loss = model.training_step((x, None), 0)
    torch.manual_seed(0)
    noisy = (x + 0.5 * torch.randn_like(x)).clamp(0, 1)
    expected = ((torch.sigmoid(model(noisy)) - x) ** 2).flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("channels", [[16, 32], [32, 16, 8]])
@pytest.mark.parametrize("deeper", [False, True])
def test_conv_networks_fit_28x28(channels, deeper):
    options = {"convs_per_block": 2, "batch_norm": True} if deeper else {}
    encoder = ConvEncoder(latent_dim=12, channels=channels, dropout=0.1, **options)
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in encoder.modules())
    n_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    assert (n_convs, n_norms) == (
        (2 * len(channels), 2 * len(channels)) if deeper else (len(channels), 0)
    )
    decoder = ConvDecoder(latent_dim=12, channels=channels[::-1])
    x = torch.rand(2, 1, 28, 28)
    assert encoder(x).shape == (2, 12)
    assert decoder(encoder(x)).shape == x.shape


def test_channels_last_networks_compute_the_same_function():
    torch.manual_seed(0)
    plain_enc = ConvEncoder(latent_dim=6, channels=[4, 8], batch_norm=True).eval()
    plain_dec = ConvDecoder(latent_dim=6, channels=[8, 4]).eval()
    fast_enc = ConvEncoder(latent_dim=6, channels=[4, 8], batch_norm=True, channels_last=True)
    fast_dec = ConvDecoder(latent_dim=6, channels=[8, 4], channels_last=True)
    fast_enc.load_state_dict(plain_enc.state_dict())  # checkpoints load across layouts
    fast_dec.load_state_dict(plain_dec.state_dict())
    fast_enc.eval()
    fast_dec.eval()

    def last_conv_weight(network):  # 4 -> 8 channels: the two layouts differ
        return [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight

    assert last_conv_weight(fast_enc).is_contiguous(memory_format=torch.channels_last)
    assert not last_conv_weight(plain_enc).is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(fast_enc(x), plain_enc(x))
    torch.testing.assert_close(fast_dec(fast_enc(x)), plain_dec(plain_enc(x)))


def test_mismatched_latent_sizes_fail_early():
    with pytest.raises(ValueError, match="latent_dim=8 but decoder latent_dim=16"):
        Autoencoder(MLPEncoder(8), MLPDecoder(16))


def mean_of_neighbours(images: torch.Tensor) -> torch.Tensor:
    """3x3 box blur by hand: each pixel's mean over the neighbours inside the image."""
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), value=float("nan"))
    patches = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # [B, C, H, W, 3, 3]
    return patches.flatten(-2).nanmean(-1)


def test_blurred_squared_error_score_by_hand():
    model = Autoencoder(MLPEncoder(4), MLPDecoder(4), score="mse", score_blur=3).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        blurred_error = mean_of_neighbours(model.reconstruct(x)) - mean_of_neighbours(x)
        expected = blurred_error.square().flatten(1).sum(1)
        unblurred = Autoencoder(MLPEncoder(4), MLPDecoder(4), score="mse")
        unblurred.load_state_dict(model.state_dict())
        torch.testing.assert_close(model.anomaly_score(x), expected)
        assert not torch.allclose(unblurred.eval().anomaly_score(x), expected)


@pytest.mark.parametrize("score, size", [("bce", 3), ("ssim", 4)])
def test_score_blur_needs_an_image_score_and_an_odd_size(score, size):
    with pytest.raises(ValueError, match="score_blur"):
        Autoencoder(MLPEncoder(4), MLPDecoder(4), score=score, score_blur=size)


def test_training_augments_input_and_target_alike(monkeypatch):
    """With max_shift / hflip the loss is the reconstruction of the augmented batch."""
    import autoencoders.models.autoencoder as module

    seen = []
    shifted = torch.rand(2, 1, 28, 28)

    def fake_augment(x, max_shift, hflip):
        seen.append((max_shift, hflip))
        return shifted

    monkeypatch.setattr(module, "augment", fake_augment)
    model = Autoencoder(MLPEncoder(4), MLPDecoder(4), max_shift=2, hflip=True)
    model.log_dict = lambda *args, **kwargs: None
    loss = model.training_step((torch.zeros(2, 1, 28, 28), torch.zeros(2)), 0)
    assert seen == [(2, True)]
    expected = (model.reconstruct(shifted) - shifted).square().flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, expected)


def test_standardized_score_by_hand():
    """Each pixel's error is standardised by its mean and std over the healthy images."""
    model = Autoencoder(MLPEncoder(4), MLPDecoder(4), score="mse", score_standardize=True).eval()
    healthy, x = torch.rand(50, 1, 28, 28), torch.rand(3, 1, 28, 28)
    with pytest.raises(RuntimeError, match="statistics of the healthy training images"):
        model.anomaly_score(x)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(healthy), batch_size=16)
    model.fit_score_statistics(loader)
    with torch.no_grad():
        errors = (model.reconstruct(healthy) - healthy).square()
        mean, std = errors.mean(0), errors.std(0) + 1e-6
        expected = ((model.reconstruct(x) - x).square() - mean) / std
        torch.testing.assert_close(model.anomaly_score(x), expected.flatten(1).mean(1))
        healthy_scores = model.anomaly_score(healthy)
    assert abs(healthy_scores.mean().item()) < 1e-4, "healthy images average to zero"


def test_score_standardize_needs_an_image_score():
    with pytest.raises(ValueError, match="score_standardize"):
        Autoencoder(MLPEncoder(4), MLPDecoder(4), score="bce", score_standardize=True)


def test_fit_computes_the_score_statistics_and_the_checkpoint_keeps_them(fake_root, tmp_path):
    model, datamodule = build(
        "anomaly_pneumonia", fake_root, "--model.init_args.score_standardize=true"
    )
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=datamodule)  # validation after the step fits the statistics
    assert model.score_mean.shape == model.score_std.shape == (1, 1, 28, 28)
    saved_mean = model.score_mean.clone()
    model.fit_score_statistics(datamodule.train_dataloader())  # the training images, again
    torch.testing.assert_close(model.score_mean, saved_mean)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = Autoencoder.load_from_checkpoint(path).eval()
    x = first_images(datamodule)
    with torch.no_grad():
        torch.testing.assert_close(loaded.anomaly_score(x), model.eval().anomaly_score(x))


def test_standardized_score_needs_a_data_module(tmp_path):
    model = Autoencoder(MLPEncoder(4), MLPDecoder(4), score="mse", score_standardize=True)
    images = torch.utils.data.TensorDataset(torch.rand(8, 1, 28, 28), torch.zeros(8))
    loader = torch.utils.data.DataLoader(images, batch_size=4)
    with pytest.raises(RuntimeError, match="fit with datamodule"):
        tiny_trainer(tmp_path).fit(model, loader, loader)
