"""Representations: stacked pre-training stages, latent maps, latent generation, class reports."""

import pytest
import torch
from pytorch_lightning import Callback
from sklearn.metrics import f1_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.__main__ import CONFIGS, main
from tests.helpers import pretrained, short


class ChangedModules(Callback):
    """Records, per epoch, which top-level parameter groups moved."""

    def __init__(self):
        self.moved: list[set[str]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.before = {k: v.clone() for k, v in pl_module.named_parameters()}

    def on_train_epoch_end(self, trainer, pl_module):
        moved = {
            ".".join(k.split(".")[:2]) if k.startswith(("encoder", "decoder")) else k.split(".")[0]
            for k, v in pl_module.named_parameters()
            if not torch.equal(self.before[k], v)
        }
        self.moved.append(moved)


def test_layer_wise_pretraining_trains_each_layer_only_in_its_stage(fake_root):
    recorder = ChangedModules()
    args = short(fake_root, "--trainer.max_epochs=4", "--model.hidden=[32, 16]",
                 "--model.pretrain_epochs=1", "--model.noise_std=0.3")  # fmt: skip
    cli = main(["--config", "stacked_ae_mnist", *args], run=False)
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert recorder.moved[0] == {"encoder.0", "decoder.0"}
    assert recorder.moved[1] == {"encoder.1", "decoder.1"}
    for epoch in (2, 3):  # fine-tuning: the encoder stack and the head, never the decoders
        assert recorder.moved[epoch] == {"encoder.0", "encoder.1", "head"}


def test_latent_map_writes_a_figure_and_finite_scores(fake_root):
    args = short(fake_root, "--trainer.limit_test_batches=5", "--trainer.log_every_n_steps=1")
    cli = main(["fit", "--config", "ae2d_fashion", *args])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    metrics = cli.trainer.callback_metrics
    for name in ("codes", "latent", "pca", "tsne"):
        assert 0 <= metrics[f"test/knn_acc_{name}"] <= 1, name
    for name in ("latent", "pca", "tsne"):
        assert -1 <= metrics[f"test/silhouette_{name}"] <= 1, name
    # fake classes differ in brightness: raw-pixel maps separate them far above chance (0.1)
    assert metrics["test/knn_acc_pca"] > 0.5
    events = EventAccumulator(cli.trainer.log_dir).Reload()
    images = set(events.Tags()["images"])
    assert {"test/latent_maps", "val/samples_latent_gaussian", "val/interpolations"} <= images


def test_classification_report_matches_scikit_learn(fake_root, encoder_checkpoint):
    checkpoint = pretrained(CONFIGS / "classifier_fashion_finetune.yaml", encoder_checkpoint)
    assert checkpoint, "the config loads a pre-trained encoder"
    args = short(fake_root, "--trainer.limit_test_batches=3", *checkpoint)
    cli = main(["fit", "--config", "classifier_fashion_finetune", *args])
    predictions, targets = [], []
    for x, y in cli.datamodule.test_dataloader():
        if len(predictions) == 3:
            break
        cli.model.eval()
        with torch.no_grad():
            predictions.append(cli.model.classify(x).argmax(1))
        targets.append(y)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    expected = f1_score(torch.cat(targets), torch.cat(predictions), average="macro",
                        labels=list(range(10)), zero_division=0)  # fmt: skip
    assert cli.trainer.callback_metrics["test/macro_f1"].item() == pytest.approx(expected)
    events = EventAccumulator(cli.trainer.log_dir).Reload()
    assert "test/classification_report" in events.Tags()["images"]
    report = events.Tensors("test/classification_report/text_summary")[-1]
    text = report.tensor_proto.string_val[0].decode()
    assert "Ankle boot" in text and "macro avg" in text


def test_classifier_augments_only_training_batches():
    from autoencoders.augment import Augment
    from autoencoders.models import EncoderClassifier
    from autoencoders.nn import ConvEncoder

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    plain = EncoderClassifier(ConvEncoder(latent_dim=8)).eval()
    policy = Augment(max_shift=2, hflip=True)
    augmented = EncoderClassifier(ConvEncoder(latent_dim=8), augment=policy).eval()
    augmented.load_state_dict(plain.state_dict())
    expected = torch.nn.functional.cross_entropy(plain(x), y)
    torch.testing.assert_close(plain.training_step((x, y), 0), expected)
    assert not torch.allclose(augmented.training_step((x, y), 0), expected)
    torch.testing.assert_close(augmented.evaluate((x, y)), plain.evaluate((x, y)))


def test_class_names_must_match_the_number_of_classes():
    from autoencoders.callbacks import ClassificationMetrics

    with pytest.raises(ValueError, match="3 class_names given for 10 classes"):
        ClassificationMetrics(num_classes=10, class_names=["a", "b", "c"])


def test_classifier_mirror_averaging_at_test_time():
    from autoencoders.models import EncoderClassifier
    from autoencoders.nn import ConvEncoder

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    plain = EncoderClassifier(ConvEncoder(latent_dim=8)).eval()
    mirrored = EncoderClassifier(ConvEncoder(latent_dim=8), tta_hflip=True).eval()
    mirrored.load_state_dict(plain.state_dict())
    # the mean of the two views' probabilities, and so the same prediction for a mirrored image
    expected = (plain(x).softmax(dim=1) + plain(x.flip(-1)).softmax(dim=1)) / 2
    torch.testing.assert_close(mirrored.classify(x).softmax(dim=1), expected)
    torch.testing.assert_close(mirrored.classify(x.flip(-1)), mirrored.classify(x))
    assert not torch.allclose(plain.classify(x.flip(-1)), plain.classify(x))
    torch.testing.assert_close(
        mirrored.evaluate((x, y))["loss"],
        torch.nn.functional.nll_loss(expected.log(), y, reduction="none"),
    )
    # training sees one view
    torch.testing.assert_close(mirrored.train().classify(x), plain.train()(x))
