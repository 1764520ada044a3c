"""One contract suite over every model family, built from the shipped configs."""

import pytest
import torch
from pytorch_lightning import Callback

from autoencoders.models import Autoencoder
from autoencoders.nn import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from autoencoders.nn.mlp import ACTIVATIONS
from autoencoders.scores import ReconstructionScore
from tests.helpers import CONFIG_FILES, CONFIG_IDS, build, pretrained, tiny_trainer


def first_images(datamodule, n: int = 8) -> torch.Tensor:
    datamodule.setup("fit")
    x, _ = next(iter(datamodule.val_dataloader()))
    return x[:n]


class ParametersAtTrainStart(Callback):
    """The parameters and buffers once training starts (after a pre-trained encoder was
    loaded)."""

    def on_train_start(self, trainer, pl_module):
        self.parameters = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        self.buffers = {k: v.detach().clone() for k, v in pl_module.named_buffers()}


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
            if model.needs_training_pass:  # statistics of the healthy images first
                model.scorer.gather(x, model.reconstruct(x))
                model.scorer.finish()
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
    for module_name, module in model.named_modules():  # a frozen network keeps its buffers
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):  # (BatchNorm statistics) too
            for name, buffer in module.named_buffers(prefix=module_name):
                assert torch.equal(snapshot.buffers[name], buffer), f"frozen {name} moved"
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    trainer.validate(model, datamodule=datamodule, verbose=False)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_evaluation_returns_what_it_computed_for_the_callbacks(family):
    """Validation and test steps return per-image tensors, at least the logged ``loss``; the
    evaluation callbacks read these instead of running the model again."""
    model, datamodule = family
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    model.eval()
    with torch.no_grad():
        if model.needs_training_pass:
            model.scorer.gather(batch[0], model.reconstruct(batch[0]))
            model.scorer.finish()
        outputs = model.evaluate(batch)
    n = len(batch[0])
    assert outputs["loss"].shape == (n,) and torch.isfinite(outputs["loss"]).all()
    assert all(v.shape[0] == n for v in outputs.values())
    if hasattr(model, "classify"):
        torch.testing.assert_close(outputs["logits"], model.classify(batch[0]))
    if "score" in outputs and not hasattr(model, "elbo_terms"):  # ELBO scores sample z
        torch.testing.assert_close(outputs["score"], model.anomaly_score(batch[0]))


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
    plain_enc = ConvEncoder(6, channels=[4, 8], batch_norm=True, channels_last=False).eval()
    plain_dec = ConvDecoder(6, channels=[8, 4], channels_last=False).eval()
    fast_enc = ConvEncoder(latent_dim=6, channels=[4, 8], batch_norm=True)  # channels-last
    fast_dec = ConvDecoder(latent_dim=6, channels=[8, 4])
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


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_conv_encoder_pools_before_activating_with_the_same_values_and_gradients(activation):
    torch.manual_seed(0)
    encoder = ConvEncoder(6, channels=[4, 8], activation=activation, batch_norm=True)
    layers = list(encoder.features)
    assert isinstance(layers[2], torch.nn.MaxPool2d)
    assert isinstance(layers[3], ACTIVATIONS[activation])
    # the same layers in the textbook order: each block's activation, then its pool
    textbook_order = ([0, 1, 3, 2, 4], [5, 6, 8, 7, 9])
    textbook = torch.nn.Sequential(*[layers[i] for block in textbook_order for i in block])
    x = torch.rand(5, 1, 28, 28) * 4 - 2
    features = encoder.features(x)
    expected = textbook(x).flatten(1)
    torch.testing.assert_close(features, expected)
    grads = torch.autograd.grad(features.square().sum(), list(encoder.features.parameters()))
    expected_grads = torch.autograd.grad(expected.square().sum(), list(textbook.parameters()))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):  # float32 sums
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-4)


def test_mismatched_latent_sizes_fail_early():
    with pytest.raises(ValueError, match="MLPDecoder latent_dim=16, expected 8"):
        Autoencoder(MLPEncoder(8), MLPDecoder(16))


def mean_of_neighbours(images: torch.Tensor) -> torch.Tensor:
    """3x3 box blur by hand: each pixel's mean over the neighbours inside the image."""
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), value=float("nan"))
    patches = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # [B, C, H, W, 3, 3]
    return patches.flatten(-2).nanmean(-1)


def test_blurred_squared_error_score_by_hand():
    x, reconstruction = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    blurred_error = mean_of_neighbours(reconstruction) - mean_of_neighbours(x)
    expected = blurred_error.square().flatten(1).sum(1)
    torch.testing.assert_close(ReconstructionScore("mse", blur=3)(x, reconstruction), expected)
    assert not torch.allclose(ReconstructionScore("mse")(x, reconstruction), expected)


def test_score_blur_needs_an_odd_size():
    with pytest.raises(ValueError, match="blur=4 must be odd"):
        ReconstructionScore("ssim", blur=4)


def test_training_augments_input_and_target_alike():
    """With an augmentation policy the loss is the reconstruction of the augmented batch."""
    seen, shifted = [], torch.rand(2, 1, 28, 28)
    policy = lambda x: seen.append(x) or shifted  # noqa: E731
    model = Autoencoder(MLPEncoder(4), MLPDecoder(4), augment=policy)
    model.log = lambda *args, **kwargs: None
    batch = torch.zeros(2, 1, 28, 28)
    loss = model.training_step((batch, torch.zeros(2)), 0)
    assert len(seen) == 1 and seen[0] is batch
    expected = (model.reconstruct(shifted) - shifted).square().flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, expected)


def test_standardized_score_by_hand():
    """Each pixel's error is standardised by its mean and std over the healthy images, which
    are gathered batch by batch (and summed across DDP ranks by ``finish``)."""
    scorer = ReconstructionScore("mse", standardize=True)
    healthy, x = torch.rand(50, 1, 28, 28), torch.rand(3, 1, 28, 28)
    rebuilt_healthy, rebuilt_x = torch.rand(50, 1, 28, 28), torch.rand(3, 1, 28, 28)
    with pytest.raises(RuntimeError, match="statistics of the healthy training images"):
        scorer(x, rebuilt_x)
    for start in range(0, 50, 16):
        scorer.gather(healthy[start : start + 16], rebuilt_healthy[start : start + 16])
    scorer.finish()
    errors = (rebuilt_healthy - healthy).square()
    mean, std = errors.mean(0), errors.std(0) + 1e-6
    expected = ((rebuilt_x - x).square() - mean) / std
    torch.testing.assert_close(scorer(x, rebuilt_x), expected.flatten(1).mean(1))
    assert abs(scorer(healthy, rebuilt_healthy).mean().item()) < 1e-4, "healthy average 0"


def test_fit_gathers_the_score_statistics_in_a_training_pass_and_the_checkpoint_keeps_them(
    fake_root, tmp_path, monkeypatch
):
    model, datamodule = build("anomaly_pneumonia", fake_root)
    gathered = []
    gather = model.scorer.gather
    monkeypatch.setattr(
        model.scorer, "gather", lambda x, r: gathered.append(len(x)) or gather(x, r)
    )
    trainer = tiny_trainer(tmp_path, limit_val_batches=None, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodule)  # validation after the step fits the statistics
    assert sum(gathered) == len(datamodule.train_set), "every healthy training image, once"
    assert model.scorer.mean.shape == model.scorer.std.shape == (1, 1, 28, 28)
    train = datamodule.train_set.__getitems__(list(range(len(datamodule.train_set))))[0]
    model.eval()
    with torch.no_grad():
        errors = model.scorer.error_map(train, model.reconstruct(train))
    torch.testing.assert_close(model.scorer.mean, errors.mean(0, keepdim=True))
    torch.testing.assert_close(model.scorer.std, errors.std(0, keepdim=True) + 1e-6)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = Autoencoder.load_from_checkpoint(path).eval()
    x = first_images(datamodule)
    with torch.no_grad():
        torch.testing.assert_close(loaded.anomaly_score(x), model.anomaly_score(x))


@pytest.mark.parametrize(
    ("config", "extra", "terms"),
    [("vae", "--data.val_size=1000", ["train/kl", "train/rec"]),
     ("ae_mnist", "--data.val_size=1000", []),
     ("classifier_fashion_finetune", "--model.init_args.encoder_checkpoint=null", [])],
)  # fmt: skip
def test_terms_are_logged_on_logging_steps_and_returned_on_every_step(
    config, extra, terms, fake_root, tmp_path
):
    """The loss and the terms reach Lightning's logging on the first batch of an epoch and on
    the batches whose logs are written (each ``self.log`` costs host time); the step returns
    them every time."""

    class Seen(Callback):
        logged, returned = [], []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            metrics = trainer.callback_metrics
            pairs = [("train/loss", "loss"), *((term, term) for term in terms)]
            now = [name in metrics and bool(metrics[name] == outputs[key]) for name, key in pairs]
            self.logged.append(now)  # the values of this batch are the ones logged
            self.returned.append(sorted(outputs))

    model, datamodule = build(config, fake_root, extra)
    seen = Seen()
    trainer = tiny_trainer(tmp_path, max_steps=5, log_every_n_steps=3, callbacks=[seen])
    trainer.fit(model, datamodule=datamodule)
    assert seen.logged == [[on] * (1 + len(terms)) for on in (True, False, True, False, False)]
    assert seen.returned == [["loss", *terms]] * 5


HOST_SYNCS = ("item", "__float__", "tolist", "cpu")


@pytest.mark.parametrize("config", ["ae_mnist", "conv_ae_fashion", "stacked_ae_fashion", "vae",
                                    "gmvae", "ssvae", "aae", "aae_unsupervised",
                                    "classifier_fashion_finetune"])  # fmt: skip
def test_a_training_step_never_waits_for_the_device(config, fake_root, monkeypatch):
    """No ``.item()``, ``float()``, ``.tolist()`` or ``.cpu()`` inside a training step: on a GPU
    each would stop the host until the device catches up. Then a step in bfloat16 autocast (what
    ``--trainer.precision bf16-mixed`` wraps the step in) gives finite terms and float32
    weights; conv networks run channels-last."""
    from experiments import speed

    scratch = "--model.init_args.encoder_checkpoint=null"  # any encoder of the right shape
    extra = scratch if config.startswith("classifier") else "--data.batch_size=32"
    model, datamodule = build(config, fake_root, "--data.val_size=1000", extra)
    optimizers = speed.raw_trainable(model)
    batch = next(speed.batches(datamodule, 1))
    originals = {name: getattr(torch.Tensor, name) for name in HOST_SYNCS}
    in_optimizer = []  # torch's Adam reads its CPU-resident step count: not the step's doing

    def guarded(name):
        def method(self, *args, **kwargs):
            if in_optimizer:
                return originals[name](self, *args, **kwargs)
            raise AssertionError(f"Tensor.{name} inside the training step")

        return method

    def outside(step):
        def stepped(*args, **kwargs):
            in_optimizer.append(True)
            try:
                return step(*args, **kwargs)
            finally:
                in_optimizer.pop()

        return stepped

    for optimizer in optimizers:
        optimizer.step = outside(optimizer.step)
    for name in HOST_SYNCS:
        monkeypatch.setattr(torch.Tensor, name, guarded(name))
    speed.raw_step(model, optimizers, batch, 0)
    monkeypatch.undo()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = speed.raw_step(model, optimizers, batch, 1)
    terms = terms if isinstance(terms, dict) else {"loss": terms}
    assert terms and all(torch.isfinite(value).all() for value in terms.values()), terms
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in model.parameters())
    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


SMALL_AAE = [
    f"--model.init_args.{net}.init_args.hidden=[32]" for net in ("decoder", "disc_z", "disc_y")
]
SMALL_AAE += ["--model.init_args.encoder=autoencoders.nn.MLPEncoder",
              "--model.init_args.encoder.init_args.latent_dim=20",
              "--model.init_args.encoder.init_args.hidden=[32]"]  # fmt: skip


def test_manual_optimization_trains_in_bf16_mixed_through_lightning(fake_root, tmp_path):
    """Lightning's ``bf16-mixed`` precision plugin with the AAE's four manual optimizers."""
    model, datamodule = build("aae", fake_root, "--data.val_size=1000", "--data.batch_size=16")
    trainer = tiny_trainer(tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=2,
                           precision="bf16-mixed")  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 8 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


@pytest.mark.slow
def test_compiled_networks_train_to_the_same_losses(fake_root, tmp_path):
    """``Compile`` under manual optimization (the AAE's four optimizers): two training batches
    compiled give the eager run's losses and parameters."""
    from autoencoders.callbacks import Compile

    class Losses(Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append({k: v.detach().clone() for k, v in outputs.items()})

    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model, datamodule = build("aae", fake_root, "--data.val_size=1000", "--data.batch_size=16",
                                  *SMALL_AAE)  # fmt: skip
        losses = Losses()
        callbacks = [losses, Compile()] if compiled else [losses]
        trainer = tiny_trainer(tmp_path, max_steps=8, limit_val_batches=0, callbacks=callbacks)
        torch.manual_seed(1)
        trainer.fit(model, datamodule=datamodule)
        runs.append((losses.seen, model.state_dict()))
    (eager, eager_state), (compiled, compiled_state) = runs
    assert len(eager) == 2 and compiled[0].keys() == eager[0].keys()
    for seen, expected in zip(compiled, eager, strict=True):
        for name in expected:
            torch.testing.assert_close(seen[name], expected[name], rtol=1e-4, atol=1e-5)
    assert compiled_state.keys() == eager_state.keys()  # checkpoints keep their keys
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-3, atol=1e-5,
                                   equal_nan=True)  # fmt: skip
