"""The adversarial autoencoder: phases, the adversarial game, DDP, checkpoints, photos."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning import Trainer

from autoencoders import losses
from autoencoders.augment import Augment
from autoencoders.callbacks import PredictionWriter
from autoencoders.consistency import Consistency
from autoencoders.data.images import UserImages, mnist_like
from autoencoders.models import AdversarialAutoencoder
from autoencoders.nn import MLP, MLPDecoder, MLPEncoder
from experiments.__main__ import main
from tests.helpers import build, short, tiny_trainer


def small_aae(style_dim: int = 2, **kwargs) -> AdversarialAutoencoder:
    """Encoder and decoder codes of 12 = 10 label logits + 2 style dimensions."""
    return AdversarialAutoencoder(
        encoder=MLPEncoder(latent_dim=12, hidden=[64]),
        decoder=MLPDecoder(latent_dim=12, hidden=[64]),
        disc_z=MLP(style_dim, [32], 1),
        disc_y=MLP(10, [32], 1),
        n_classes=10,
        style_dim=style_dim,
        **kwargs,
    )


@pytest.mark.parametrize("consistency", ["0", "1"])
def test_each_phase_changes_only_its_own_parameters(consistency, fake_root, monkeypatch, tmp_path):
    model, datamodule = build(
        "aae",
        fake_root,
        "--data.val_size",
        "1000",
        "--model.init_args.consistency.init_args.weight",
        consistency,
    )
    owners = {"encoder", "decoder", "disc_z", "disc_y"}
    changed_by_phase, reached_by_phase = [], []
    original = model._step
    names = {p: name.split(".")[0] for name, p in model.named_parameters()}

    def recording_step(optimizer, loss_fn, *args):
        def recording_loss_fn(*args):
            loss, logs = loss_fn(*args)
            reached_by_phase.append({names[p] for p in graph_leaves(loss) if p in names})
            return loss, logs

        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        result = original(optimizer, recording_loss_fn, *args)
        changed = {
            k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])
        }
        assert changed <= owners
        changed_by_phase.append(changed)
        return result

    monkeypatch.setattr(model, "_step", recording_step)
    trainer = Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    assert changed_by_phase == [
        {"encoder", "decoder"},  # 1. reconstruction
        {"disc_z", "disc_y"},  # 2a. discriminators
        {"encoder"},  # 2b. generator
        {"encoder"},  # 3. labelled cross-entropy (and the consistency term)
    ]
    # backward computes gradients for these alone: none for the frozen discriminators in 2b
    assert reached_by_phase == changed_by_phase


def graph_leaves(loss: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors whose gradients ``loss.backward()`` would compute."""
    leaves, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # AccumulateGrad
            leaves.append(node.variable)
        stack += [next_node for next_node, _ in node.next_functions]
    return leaves


def adversarial_training(train_generator: bool, steps: int = 300) -> tuple[float, float]:
    """Style codes start 4 units away from the N(0, I) prior; returns the norm of their mean
    before and after ``steps`` of the discriminator phase (and the generator phase)."""
    torch.manual_seed(0)
    model = small_aae()
    with torch.no_grad():
        model.encoder.net[-1].bias[10:] += 4.0
    x = torch.randn(512, 1, 28, 28)
    _, opt_disc, opt_gen, _ = model.configure_optimizers()[0]

    def mean_norm() -> float:
        with torch.no_grad():
            return float(model.embed(x).mean(0).norm())

    start = mean_norm()
    for _ in range(steps):
        batch = x[torch.randint(len(x), (128,))]
        loss, _ = model.discriminator_loss(*model.encode(batch))
        opt_disc.zero_grad(), loss.backward(), opt_disc.step()
        if train_generator:
            loss, _ = model.generator_loss(*model.encode(batch))
            opt_gen.zero_grad(), loss.backward(), opt_gen.step()
    return start, mean_norm()


def test_generator_phase_moves_codes_toward_the_prior():
    start, end = adversarial_training(train_generator=True)
    assert end < 0.4 * start
    start, end = adversarial_training(train_generator=False)
    assert end == pytest.approx(start), "without the generator phase the codes stay put"


def test_generator_loss_is_both_adversarial_terms_plus_the_class_balance():
    x = torch.rand(8, 1, 28, 28)
    model = small_aae()
    logits, z = model.encode(x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    on_z, on_y = model.disc_z(z).squeeze(1), model.disc_y(logits.softmax(1)).squeeze(1)
    adversarial = bce(on_z, torch.ones(8)) + bce(on_y, torch.ones(8))
    torch.testing.assert_close(model.generator_loss(logits, z)[0], adversarial)
    model.consistency = Consistency(weight=0.0, balance_weight=3.0)
    balance = losses.class_balance(logits.softmax(1))
    loss, logs = model.generator_loss(logits, z)
    torch.testing.assert_close(loss, adversarial + 3.0 * balance)
    torch.testing.assert_close(logs["train/balance"], 3.0 * balance.detach())


def test_balance_term_spreads_a_collapsed_label_code_over_the_classes():
    """Every image starts in class 0 (the collapse the label discriminator alone allows); the
    balance term alone spreads them out."""
    torch.manual_seed(0)
    model = small_aae(consistency=Consistency(weight=0.0, balance_weight=1.0))
    with torch.no_grad():
        model.encoder.net[-1].bias[0] += 8.0
    x = torch.rand(256, 1, 28, 28)
    optimizer = model.configure_optimizers()[0][2]

    def spread() -> tuple[float, int]:
        with torch.no_grad():
            probs = model.classify(x).softmax(1)
        return float(losses.class_balance(probs)), len(probs.argmax(1).unique())

    start, classes_at_start = spread()
    for _ in range(200):
        balance = model.consistency.balance(model.classify(x).softmax(1))
        optimizer.zero_grad(), balance.backward(), optimizer.step()
    end, classes_at_end = spread()
    assert classes_at_start == 1 and start > 2.0
    assert end < 0.05 * start and classes_at_end >= 8


def test_classification_uses_logits_once():
    model = small_aae()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    expected = torch.nn.functional.cross_entropy(model.classify(x), y)
    torch.testing.assert_close(model.label_loss((x, y), None, None)[0], expected)


def test_discriminators_see_real_and_fake_codes_in_one_call_with_the_two_call_loss():
    model = small_aae()
    logits, z = model.encode(torch.rand(6, 1, 28, 28))
    torch.manual_seed(0)
    loss, logs = model.discriminator_loss(logits, z)
    torch.manual_seed(0)  # the same prior draws, in the same order
    real_z, real_y = torch.randn(6, 2), torch.nn.functional.one_hot(torch.randint(10, (6,)), 10)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected, pairs = {}, {"z": (real_z, z), "y": (real_y.float(), logits.softmax(1))}
    for name, disc in (("z", model.disc_z), ("y", model.disc_y)):
        real, fake = pairs[name]
        on_real, on_fake = disc(real).squeeze(1), disc(fake).squeeze(1)
        expected[name] = bce(on_real, torch.ones(6)) + bce(on_fake, torch.zeros(6))
    torch.testing.assert_close(loss, expected["z"] + expected["y"])
    torch.testing.assert_close(logs["train/disc_y"], expected["y"].detach())
    loss.backward()
    assert z.grad is None and all(p.grad is None for p in model.encoder.parameters())


def test_labelled_and_unlabelled_terms_share_one_encoder_call_with_the_separate_losses():
    part = Consistency(weight=1.0, threshold=0.0, balance_weight=0.5)
    model = small_aae(input_noise=0.0, consistency=part)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    clean = torch.rand(6, 1, 28, 28)
    view = clean.flip(-1)
    calls = []
    model.encoder.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    loss, logs = model.label_loss((x, y), view, clean)
    assert calls == [10, 6]  # labelled and view together, then the clean target (no gradient)
    cls = model.label_loss((x, y), None, None)[0]
    consistency = model.label_loss(None, view, clean)[0]
    torch.testing.assert_close(loss, cls + consistency)
    torch.testing.assert_close(logs["train/cls"], cls.detach())
    torch.testing.assert_close(logs["train/consistency"], consistency.detach())


def test_consistency_target_is_the_prediction_for_the_clean_image(monkeypatch):
    model = small_aae(input_noise=0.0, consistency=Consistency(weight=2.0, threshold=0.0))
    clean = torch.rand(8, 1, 28, 28)
    view = clean.roll(1, dims=-1)
    target = model.classify(clean).softmax(dim=1).detach()
    expected = 2.0 * torch.nn.functional.cross_entropy(model.classify(view), target)
    torch.testing.assert_close(model.label_loss(None, view, clean)[0], expected)
    # When the view is the clean image the loss is at its minimum over the prediction (the
    # entropy of the target): no gradient, because none flows through the target.
    model.label_loss(None, clean, clean)[0].backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(g.abs().max() < 1e-6 for g in grads)


def test_without_labels_the_consistency_step_also_balances_the_clusters():
    """Clustering: the balance term joins the consistency term's optimizer step, which would
    otherwise pull every image into one cluster."""
    part = Consistency(weight=1.0, threshold=0.0, balance_weight=3.0)
    model = small_aae(input_noise=0.0, consistency=part)
    clean = torch.rand(8, 1, 28, 28)
    view = clean.flip(-1)
    logits = model.classify(view)
    target = model.classify(clean).detach()
    expected = part(logits, target) + 3.0 * losses.class_balance(logits.softmax(dim=1))
    torch.testing.assert_close(model.label_loss(None, view, clean)[0], expected)
    assert part.balance(logits.softmax(dim=1)) > 0


def test_consistency_is_computed_every_step_and_logged(fake_root, monkeypatch, tmp_path):
    model, datamodule = build(
        "aae",
        fake_root,
        "--data.val_size=1000",
        "--data.batch_size=32",
        "--model.init_args.consistency.init_args.threshold=0",  # soft: positive from the start
    )
    calls = []
    monkeypatch.setattr(model, "label_loss", record(model.label_loss, calls))
    trainer = tiny_trainer(tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=2,
                           limit_val_batches=0, log_every_n_steps=2)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert len(calls) == 2 and all(loss > 0 for loss in calls)
    assert "train/consistency" in trainer.logged_metrics  # logged on batch 2, a logging step


def record(method, calls):
    def wrapper(*args):
        loss, logs = method(*args)
        calls.append(float(logs["train/consistency"]))
        return loss, logs

    return wrapper


def test_reconstruction_target_is_the_clean_image():
    model = small_aae(input_noise=0.5)
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(0)
    loss = model.reconstruction_loss(x)
    torch.manual_seed(0)
    noisy = x + 0.5 * torch.randn_like(x)
    logits = model(noisy)
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        .flatten(1)
        .sum(1)
        .mean()
    )
    torch.testing.assert_close(loss, expected)


def test_augment_policy_makes_the_training_views(fake_root, monkeypatch, tmp_path):
    """Every training image, labelled and unlabelled, goes through the injected policy once."""
    model, datamodule = build("aae", fake_root, "--data.val_size=1000", "--data.batch_size=32")
    assert isinstance(model.augment, Augment) and model.augment.max_degrees == 15
    seen = []
    model.augment.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    trainer = tiny_trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)
    assert seen == [32, 32]  # the unlabelled batch, then the labelled one (100 labels)


def test_code_sizes_are_checked_up_front():
    with pytest.raises(ValueError, match="n_classes \\+ style_dim = 10 \\+ 5"):
        small_aae(style_dim=5)


def test_sample_generates_the_requested_classes():
    model = small_aae()
    images = model.sample(6, torch.tensor([0, 1, 2, 3, 4, 5]))
    assert images.shape == (6, 1, 28, 28) and images.min() >= 0 and images.max() <= 1


def test_checkpoint_restores_optimizer_and_scheduler_states(fake_root):
    first = main(["fit", "--config", "aae_seed", *short(fake_root)])
    last = Path(first.trainer.log_dir) / "checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert len(checkpoint["optimizer_states"]) == 4
    assert [s["last_epoch"] for s in checkpoint["lr_schedulers"]] == [1, 1, 1, 1]
    resumed = main(["fit", "--config", "aae_seed", *short(fake_root, f"--ckpt_path={last}")])
    for saved, live in zip(checkpoint["optimizer_states"], resumed.trainer.optimizers, strict=True):
        assert saved["param_groups"][0]["lr"] == live.param_groups[0]["lr"]
        state = live.state_dict()["state"]
        for index, values in saved["state"].items():
            torch.testing.assert_close(state[index]["momentum_buffer"], values["momentum_buffer"])
    schedulers = [config.scheduler for config in resumed.trainer.lr_scheduler_configs]
    assert [s.last_epoch for s in schedulers] == [1, 1, 1, 1]


def digit_photo(size, mode, light_background: bool) -> Image.Image:
    """A drawn '1'-like stroke: a thick vertical bar, off centre, on paper."""
    width, height = size
    paper, ink = (235, 20) if light_background else (15, 240)
    array = np.full((height, width), paper, dtype=np.uint8)
    array[height // 5 : 4 * height // 5, width // 3 : width // 3 + max(2, width // 12)] = ink
    image = Image.fromarray(array, "L")
    return image.convert(mode)


def test_mnist_like_preprocessing():
    x = mnist_like(digit_photo((300, 200), "RGB", light_background=True))
    assert x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    rows, cols = torch.nonzero(x[0] > 0.3, as_tuple=True)
    assert rows.max() - rows.min() + 1 in (19, 20, 21), "the longer side fits 20 pixels"
    mass = x[0] / x[0].sum()
    centre_row = (mass.sum(1) * torch.arange(28)).sum()
    centre_col = (mass.sum(0) * torch.arange(28)).sum()
    assert abs(centre_row - 14) < 1.5 and abs(centre_col - 14) < 1.5
    dark = mnist_like(digit_photo((300, 200), "L", light_background=False))
    torch.testing.assert_close(dark, x, atol=0.1, rtol=0), "same digit, either polarity"
    assert x[0, 0, 0] == 0, "background is black like MNIST"


def test_predict_on_photos_writes_csv_and_skips_broken_files(fake_root, tmp_path, capfd):
    photos = tmp_path / "photos"
    photos.mkdir()
    digit_photo((64, 64), "RGB", True).save(photos / "a.png")
    digit_photo((120, 90), "L", False).save(photos / "b.jpg")
    digit_photo((28, 28), "RGBA", True).save(photos / "c.png")
    (photos / "broken.png").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("ignored: not an image extension")
    images = UserImages(photos)
    assert [p.name for p in images.paths] == ["a.png", "b.jpg", "c.png"]
    assert "broken.png" in capfd.readouterr().err

    fit = main(["fit", "--config", "aae", *short(fake_root, train_batches=2)])
    ckpt = Path(fit.trainer.log_dir) / "checkpoints/last.ckpt"
    predict = [f"--ckpt_path={ckpt}", f"--data.path={photos}"]
    predicted = main(["predict", "--config", "aae", *short(fake_root, *predict)])
    writer = next(c for c in predicted.trainer.callbacks if isinstance(c, PredictionWriter))
    assert writer.path.parent == Path(predicted.trainer.log_dir)
    with open(writer.path) as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg", "c.png"]
    for row in rows:
        assert 0 <= int(row["label"]) <= 9 and 0 < float(row["probability"]) <= 1

    # on request, what the model saw: the prepared 28x28 digit beside each prediction
    seen = "--trainer.callbacks.init_args.save_inputs=true"  # PredictionWriter comes last
    again = main(["predict", "--config", "aae", *short(fake_root, *predict, seen)])
    writer = next(c for c in again.trainer.callbacks if isinstance(c, PredictionWriter))
    with open(writer.path) as f:
        rows = list(csv.DictReader(f))
    for row, prepared in zip(rows, images.images, strict=True):
        saved = torch.from_numpy(np.asarray(Image.open(row["input"]).convert("L"))) / 255
        assert saved.shape == (28, 28)
        torch.testing.assert_close(saved, prepared[0], atol=1 / 255, rtol=0)


def test_figures_line_up_with_the_scalars(fake_root):
    """Four optimizer steps per batch: figures are written at the scalars' step (batches)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit = main(["fit", "--config", "aae", *short(fake_root, train_batches=2)])
    assert fit.trainer.global_step == 8
    events = EventAccumulator(fit.trainer.logger.log_dir, size_guidance={"images": 0}).Reload()
    scalar_step = events.Scalars("val/acc")[-1].step
    assert scalar_step < 8
    for tag in ("val/samples_by_class", "val/latent_vs_prior", "val/confusion_matrix"):
        assert [image.step for image in events.Images(tag)] == [scalar_step]
