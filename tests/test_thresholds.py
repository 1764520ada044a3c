"""Anomaly thresholds: each rule by hand, metrics against scikit-learn, the callback end to end."""

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as sk
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from autoencoders.callbacks import PredictionWriter
from autoencoders.callbacks.thresholds import AnomalyThreshold, detection_metrics, fit_threshold
from experiments.__main__ import main
from tests.helpers import short


def pneumonia(root: str, *extra: str) -> list[str]:
    """A short run of conv_ae_pneumonia on the fake data (no MNIST-only val_size)."""
    return [a for a in short(root, *extra) if not a.startswith("--data.val_size")]


# Eight normal images scored 1..8, two anomalies scored 6.5 and 9 (worked out in the test).
SCORES = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 6.5, 9])
LABELS = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])


@pytest.mark.parametrize(
    "rule, expected",
    [
        # threshold 9: only the 9 is flagged, 9/10 right; 6.5 flags four (2 TP, 2 FP), 8/10.
        ("max_accuracy", 9.0),
        # 6.5: sensitivity 1, specificity 6/8 -> J = 0.75; 9: J = 0.5 + 1 - 1 = 0.5.
        ("youden", 6.5),
        # 6.5: F1 = 2*2 / (2*2 + 2 + 0) = 2/3; 9: 2*1 / (2 + 0 + 1) = 2/3; ties go low.
        ("max_f1", 6.5),
        # median of the normal scores 1..8 (linear interpolation).
        ("healthy_quantile", 4.5),
    ],
)
def test_each_rule_on_a_hand_computed_case(rule, expected):
    assert fit_threshold(SCORES, LABELS, rule, quantile=0.5) == pytest.approx(expected)


def brute_force(scores: torch.Tensor, labels: torch.Tensor, rule: str) -> float:
    """The lowest observed score that maximises the rule's objective, by trying every one."""
    best, chosen = -1.0, None
    for t in sorted(set(scores.tolist())):
        p = scores >= t
        tp, fp = int((p & (labels == 1)).sum()), int((p & (labels == 0)).sum())
        fn, tn = int((~p & (labels == 1)).sum()), int((~p & (labels == 0)).sum())
        objective = {
            "max_accuracy": (tp + tn) / len(scores),
            "youden": tp / (tp + fn) - fp / (fp + tn),
            "max_f1": 2 * tp / max(1, 2 * tp + fp + fn),
        }[rule]
        if objective > best + 1e-12:
            best, chosen = objective, t
    return chosen


@pytest.mark.parametrize("rule", ["max_accuracy", "youden", "max_f1"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rules_from_torchmetrics_curves_equal_an_exhaustive_search(rule, seed):
    """Ties included: the scores are rounded, so many images share a score."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (300,), generator=generator)
    scores = (torch.randn(300, generator=generator) + labels + 40).round(decimals=1)
    assert fit_threshold(scores, labels, rule) == pytest.approx(brute_force(scores, labels, rule))


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown threshold rule 'best'"):
        AnomalyThreshold(rule="best")


@pytest.mark.parametrize("offset", [0.0, 500.0], ids=["near-zero", "nelbo-sized"])
def test_metrics_equal_scikit_learn_on_random_scores(offset):
    """Also for scores far outside [0, 1] (a negative ELBO), which torchmetrics would squash."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (500,), generator=generator)
    scores = torch.randn(500, generator=generator) + labels * 0.8 + offset
    threshold = 0.3 + offset
    ours = detection_metrics(scores, labels, threshold)
    y, s, p = labels.numpy(), scores.numpy(), (scores >= threshold).long().numpy()
    expected = {
        "auroc": sk.roc_auc_score(y, s),
        "auprc": sk.average_precision_score(y, s),
        "acc": sk.accuracy_score(y, p),
        "balanced_acc": sk.balanced_accuracy_score(y, p),
        "f1": sk.f1_score(y, p),
        "sensitivity": sk.recall_score(y, p),
        "specificity": sk.recall_score(y, p, pos_label=0),
    }
    for name, value in expected.items():
        assert ours[name].item() == pytest.approx(value, abs=1e-6), name


class ScoreByMean(torch.nn.Module):
    """A stand-in model that keeps its threshold and records what is logged."""

    def __init__(self):
        super().__init__()
        self.logged = {}
        self.register_buffer("anomaly_threshold", torch.tensor(float("nan")))

    def log_dict(self, values):
        self.logged |= values

    def log(self, name, value, **kwargs):
        self.logged[name] = value


def run_validation(callback, batches):
    trainer = SimpleNamespace(sanity_checking=False)
    model = ScoreByMean()
    callback.on_validation_epoch_start(trainer, model)
    for x, y in batches:  # the step's outputs: the mean pixel as score
        callback.on_validation_batch_end(trainer, model, {"score": x.flatten(1).mean(1)}, (x, y), 0)
    callback.on_validation_epoch_end(trainer, model)
    return model.logged


def test_validation_without_anomalies_warns_and_uses_the_healthy_quantile():
    x = torch.arange(10.0).view(10, 1, 1, 1)
    callback = AnomalyThreshold(rule="max_accuracy", quantile=0.9)
    with pytest.warns(UserWarning, match="only normal images.*using healthy_quantile"):
        logged = run_validation(callback, [(x, torch.zeros(10, dtype=torch.long))])
    model_threshold = logged["val/threshold"].item()
    assert model_threshold == pytest.approx(8.1)  # 0.9 quantile of 0..9, not the lowest score
    assert logged["val/threshold"].item() == pytest.approx(8.1)
    assert "val/auroc" not in logged


def test_validation_fits_the_rule_and_logs_auroc():
    callback = AnomalyThreshold(rule="youden")
    batches = [(SCORES[:5].view(5, 1, 1, 1), LABELS[:5]), (SCORES[5:].view(5, 1, 1, 1), LABELS[5:])]
    logged = run_validation(callback, batches)
    assert logged["val/threshold"].item() == pytest.approx(6.5)
    assert logged["val/auroc"].item() == pytest.approx(sk.roc_auc_score(LABELS, SCORES))


def events_of(run: Path) -> EventAccumulator:
    return EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()


def test_fit_test_and_predict_with_the_stored_threshold(fake_root, tmp_path):
    main(["fit", "--config", "conv_ae_pneumonia", *pneumonia(fake_root)])
    run = Path("runs/conv_ae_pneumonia/version_0")
    last = run / "checkpoints" / "last.ckpt"
    threshold = torch.load(last, weights_only=True)["state_dict"]["anomaly_threshold"].item()
    assert not np.isnan(threshold), "the fitted threshold is model state, in the checkpoint"
    from autoencoders.models import Autoencoder

    loaded = Autoencoder.load_from_checkpoint(last).eval()  # no callback, no trainer
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        detected = loaded.detect(x)
        torch.testing.assert_close(detected["score"], loaded.anomaly_score(x))
    assert torch.equal(detected["anomaly"], (detected["score"] >= threshold).long())
    tested = main(
        ["test", "--config", "conv_ae_pneumonia", *pneumonia(fake_root, f"--ckpt_path={last}")]
    )
    metrics = tested.trainer.callback_metrics
    for name in ("auroc", "auprc", "acc", "balanced_acc", "f1", "sensitivity", "specificity"):
        assert 0 <= metrics[f"test/{name}"] <= 1, name
    events = events_of(Path(tested.trainer.log_dir))
    assert {"test/scores", "test/confusion_matrix", "test/worst_errors"} <= set(
        events.Tags()["images"]
    )

    scans = tmp_path / "scans"
    scans.mkdir()
    for i, size in enumerate([(28, 28), (64, 80), (300, 200)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, size, dtype=np.uint8)).save(
            scans / f"scan{i}.png"
        )
    Image.new("RGB", (50, 40), (90, 120, 30)).save(scans / "colour.jpg")
    (scans / "broken.png").write_bytes(b"not an image")
    args = pneumonia(fake_root, f"--ckpt_path={last}", f"--data.path={scans}")
    predicted = main(["predict", "--config", "conv_ae_pneumonia", *args])
    writer = next(c for c in predicted.trainer.callbacks if isinstance(c, PredictionWriter))
    rows = list(csv.DictReader(writer.path.open()))
    assert [Path(r["path"]).name for r in rows] == [
        "colour.jpg", "scan0.png", "scan1.png", "scan2.png"
    ]  # fmt: skip
    for row in rows:
        assert int(row["anomaly"]) == int(float(row["score"]) >= threshold)
