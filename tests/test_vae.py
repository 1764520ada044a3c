"""The variational family: densities, bounds, the SSVAE's marginalised term, and its callbacks."""

import math

import pytest
import torch
from pytorch_lightning import Trainer
from torch.distributions import Categorical, MixtureSameFamily, Normal, kl_divergence
from torch.distributions import Independent as Ind

from autoencoders import distributions as D
from autoencoders import losses
from autoencoders.augment import Augment
from autoencoders.callbacks import NELBOMetrics, PriorSampleGrid
from autoencoders.consistency import Consistency
from autoencoders.models import GMVAE, SSVAE, VAE, EncoderClassifier
from autoencoders.nn import MLP, ConvEncoder, MLPDecoder, MLPEncoder
from tests.helpers import build


def test_log_normal_and_kl_match_torch_distributions():
    mu, logvar, z = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    q = Ind(Normal(mu, (0.5 * logvar).exp()), 1)
    torch.testing.assert_close(D.log_normal(z, mu, logvar), q.log_prob(z))
    prior = Ind(Normal(torch.zeros(3), torch.ones(3)), 1)
    torch.testing.assert_close(D.kl_normal(mu, logvar), kl_divergence(q, prior))


def test_mixture_log_density_matches_a_brute_force_sum():
    means, logvars, z = torch.randn(7, 4), torch.randn(7, 4), torch.randn(6, 4)
    brute = torch.stack(
        [
            sum(Ind(Normal(means[i], (0.5 * logvars[i]).exp()), 1).log_prob(z[b]).exp() / 7
                for i in range(7)).log()
            for b in range(6)
        ]
    )  # fmt: skip
    torch.testing.assert_close(D.log_normal_mixture(z, means, logvars), brute)
    mixture = MixtureSameFamily(
        Categorical(torch.ones(7)), Ind(Normal(means, (0.5 * logvars).exp()), 1)
    )
    torch.testing.assert_close(D.log_normal_mixture(z, means, logvars), mixture.log_prob(z))


def test_bernoulli_nll_matches_torch_distributions():
    logits, x = torch.randn(3, 1, 4, 4), torch.randint(0, 2, (3, 1, 4, 4)).float()
    expected = -torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(losses.bernoulli_nll(logits, x), expected)


def tiny_vae(cls=VAE, **kwargs):
    torch.manual_seed(0)
    return cls(MLPEncoder(8, [32]), MLPDecoder(4, [32]), **kwargs)


def test_iwae_bound_is_above_the_elbo_and_tightens_with_k():
    model = tiny_vae(iwae_chunk=16).eval()
    x = torch.bernoulli(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = -sum(model.elbo_terms(x).values()).mean()
        bounds = {k: model.log_likelihood(x, k).mean() for k in (1, 10, 100)}
    assert abs(bounds[1] - elbo) < 0.05 * abs(elbo), "k = 1 is the ELBO (up to sampling noise)"
    assert elbo < bounds[10] < bounds[100], bounds


def test_gmvae_kl_is_the_single_sample_estimate():
    model = tiny_vae(GMVAE, k=5)
    mu, logvar, z = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    mixture = MixtureSameFamily(
        Categorical(torch.ones(5)),
        Ind(Normal(model.prior_means, (0.5 * model.prior_logvars).exp()), 1),
    )
    expected = Ind(Normal(mu, (0.5 * logvar).exp()), 1).log_prob(z) - mixture.log_prob(z)
    torch.testing.assert_close(model.kl(mu, logvar, z), expected)
    assert model.sample(6).shape == (6, 1, 28, 28)


def test_beta_weights_only_the_kl_of_the_training_loss():
    model = tiny_vae(beta=4.0)
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(0)
    loss, terms = model.loss(x)
    torch.testing.assert_close(loss, terms["rec"] + 4.0 * terms["kl"])


def test_vae_sizes_are_checked():
    with pytest.raises(ValueError, match="latent_dim=.*, expected 8: twice"):
        VAE(MLPEncoder(4), MLPDecoder(4))


def tiny_ssvae(**kwargs) -> SSVAE:
    torch.manual_seed(0)
    return SSVAE(
        MLP(16 + 3, [8], 2 * 2), MLP(2 + 3, [8], 16), MLPEncoder(3, [8], input_shape=(1, 4, 4)),
        z_dim=2, n_classes=3, image_shape=(1, 4, 4), **kwargs,
    )  # fmt: skip


def test_ssvae_unlabelled_term_is_the_expectation_over_classes(monkeypatch):
    monkeypatch.setattr(D, "reparameterize", lambda mu, logvar: mu)  # z = mean: deterministic
    model = tiny_ssvae()
    x = torch.rand(2, 1, 4, 4)
    q = torch.softmax(model.classify(x), 1)
    by_hand = torch.zeros(2)
    for b in range(2):
        for y in range(3):
            label = torch.tensor([y])
            mu, logvar = model.posterior(x[b : b + 1], label)
            rec = losses.bernoulli_nll(model.decode(mu, label), x[b : b + 1])
            neg_l = rec + D.kl_normal(mu, logvar) + math.log(3)  # -L(x, y), log p(y) = -log 3
            by_hand[b] += q[b, y] * (neg_l[0] + q[b, y].log())  # E_q[-L] - H(q)
    terms = model.elbo_terms(x)
    torch.testing.assert_close(terms["rec"] + terms["kl"], by_hand)


def test_ssvae_loss_is_weighted_elbos_plus_weighted_cross_entropy(monkeypatch):
    monkeypatch.setattr(D, "reparameterize", lambda mu, logvar: mu)
    model = tiny_ssvae(class_weight=7.0, gen_weight=0.5)
    x_u, x_l, y_l = torch.rand(4, 1, 4, 4), torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    loss, logs = model.loss(x_u, x_l, y_l)
    ce = torch.nn.functional.cross_entropy(model.classify(x_l), y_l)
    u = sum(model.elbo_terms(x_u).values()).mean()
    labelled = sum(model.labelled_nelbo(x_l, y_l).values()).mean()
    torch.testing.assert_close(loss, 0.5 * (u + labelled) + 7.0 * ce)
    assert set(logs) == {"train/loss", "train/cls", "train/nelbo_u", "train/nelbo_l"}


def test_ssvae_augments_the_classifier_inputs_only(monkeypatch):
    """Augmentation and the consistency term touch the classifier's inputs; the ELBO terms see
    the batch as given, so the NELBO stays M2's."""
    monkeypatch.setattr(D, "reparameterize", lambda mu, logvar: mu)
    model = tiny_ssvae(
        class_weight=7.0, augment=Augment(max_shift=1), consistency=Consistency(3.0, 0.0)
    )
    x_u, x_l, y_l = torch.rand(4, 1, 4, 4), torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    seen = {"elbo_terms": [], "labelled_nelbo": [], "classify": []}
    originals = {name: getattr(model, name) for name in seen}
    for name in seen:
        monkeypatch.setattr(model, name, _recording(originals[name], seen[name]))
    torch.manual_seed(1)
    loss, logs = model.loss(x_u, x_l, y_l)
    assert torch.equal(seen["elbo_terms"][0], x_u)
    assert torch.equal(seen["labelled_nelbo"][-1], x_l)  # [0] is elbo_terms' call per class
    labelled_view, clean_u, view_u = seen["classify"][:3]
    assert labelled_view.shape == x_l.shape and not torch.equal(labelled_view, x_l)
    assert torch.equal(clean_u, x_u) and not torch.equal(view_u, x_u)
    classify = originals["classify"]
    ce = torch.nn.functional.cross_entropy(classify(labelled_view), y_l)
    cons = torch.nn.functional.cross_entropy(classify(view_u), classify(x_u).softmax(1))
    torch.testing.assert_close(logs["train/consistency"], 3.0 * cons)
    u = sum(model.elbo_terms(x_u).values()).mean()
    labelled = sum(model.labelled_nelbo(x_l, y_l).values()).mean()
    torch.testing.assert_close(loss, u + labelled + 7.0 * ce + 3.0 * cons)


def test_ssvae_balance_term_is_weighted_kl_of_the_unlabelled_mean_prediction(monkeypatch):
    monkeypatch.setattr(D, "reparameterize", lambda mu, logvar: mu)
    x_u, x_l, y_l = torch.rand(4, 1, 4, 4), torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    without, _ = tiny_ssvae(class_weight=7.0).loss(x_u, x_l, y_l)
    model = tiny_ssvae(class_weight=7.0, consistency=Consistency(0.0, balance_weight=5.0))
    loss, logs = model.loss(x_u, x_l, y_l)
    balance = losses.class_balance(model.classify(x_u).softmax(1))
    assert balance > 0
    torch.testing.assert_close(logs["train/balance"], 5.0 * balance)
    torch.testing.assert_close(loss, without + 5.0 * balance)
    balance_only = Consistency(0.0, balance_weight=5.0)
    alone = tiny_ssvae(class_weight=0.0, gen_weight=0.0, consistency=balance_only)
    loss, _ = alone.loss(x_u, x_l, y_l)  # the term alone trains the classifier
    loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in alone.classifier.parameters())


def _recording(method, calls: list):
    """``method`` that also appends its first argument to ``calls``."""

    def wrapper(x, *args):
        calls.append(x)
        return method(x, *args)

    return wrapper


def test_supervised_only_ssvae_trains_the_classifier_alone():
    model = tiny_ssvae(gen_weight=0.0)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())
    x_l, y_l = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    loss, logs = model.loss(torch.rand(4, 1, 4, 4), x_l, y_l)
    torch.testing.assert_close(loss, 100.0 * logs["train/cls"])
    optimizer = model.configure_optimizers()
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.classifier.parameters()}


def test_ssvae_sizes_are_checked():
    with pytest.raises(ValueError, match="in_features=5, expected 6"):
        SSVAE(MLP(19, [8], 6), MLP(5, [8], 16), MLPEncoder(3, [8]), z_dim=3, n_classes=3)


def fit_briefly(model, datamodule, tmp_path, callbacks=(), steps=3):
    trainer = Trainer(
        max_steps=steps, limit_val_batches=2, limit_test_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=list(callbacks), default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return trainer


def test_nelbo_callback_logs_terms_that_add_up_and_an_iwae_bound(fake_root, tmp_path):
    model, datamodule = build("vae", fake_root)
    trainer = fit_briefly(model, datamodule, tmp_path, [NELBOMetrics(iwae_samples=50)])
    trainer.validate(model, datamodule=datamodule, verbose=False)
    m = trainer.callback_metrics
    # One z sample per image, so nelbo = rec + kl holds for the averages too.
    torch.testing.assert_close(m["val/nelbo"], m["val/rec"] + m["val/kl"])
    trainer.test(model, datamodule=datamodule, verbose=False)
    m = trainer.callback_metrics
    torch.testing.assert_close(m["test/nelbo"], m["test/rec"] + m["test/kl"])
    assert m["test/nll_iwae"] < m["test/nelbo"], "the IWAE bound is tighter than the ELBO"


def test_ssvae_val_loss_is_the_nelbo_its_callback_reports(fake_root, tmp_path):
    """The NELBO callback reads the terms the validation step computed: the same z samples."""
    model, datamodule = build("ssvae", fake_root, "--data.val_size=1000")
    trainer = fit_briefly(model, datamodule, tmp_path, [NELBOMetrics()], steps=1)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    m = trainer.callback_metrics
    torch.testing.assert_close(m["val/loss"], m["val/nelbo"])


def test_prior_samples_are_classified_into_a_histogram_and_an_entropy(fake_root, tmp_path):
    classifier, datamodule = build("mnist_classifier", fake_root)
    trainer = fit_briefly(classifier, datamodule, tmp_path)
    checkpoint = tmp_path / "classifier" / "best.ckpt"
    trainer.save_checkpoint(checkpoint)
    model, datamodule = build("vae", fake_root)
    pattern = str(tmp_path / "classifier" / "*.ckpt")
    grid = PriorSampleGrid(num_samples=50, nrow=10, classifier_checkpoint=pattern)
    trainer = fit_briefly(model, datamodule, tmp_path, [grid])
    trainer.test(model, datamodule=datamodule, verbose=False)
    entropy = trainer.callback_metrics["test/sample_class_entropy"]
    classes = EncoderClassifier.load_from_checkpoint(checkpoint).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        predicted = classes.classify(model.sample(50).clamp(0, 1)).argmax(1)
    p = torch.bincount(predicted, minlength=10).float() / 50
    expected = -(p[p > 0] * p[p > 0].log()).sum()
    torch.testing.assert_close(entropy, expected)


def test_missing_classifier_checkpoint_warns_and_skips(fake_root, tmp_path):
    model, datamodule = build("vae", fake_root)
    grid = PriorSampleGrid(num_samples=20, classifier_checkpoint=str(tmp_path / "none*.ckpt"))
    trainer = fit_briefly(model, datamodule, tmp_path, [grid])
    with pytest.warns(UserWarning, match="no classifier checkpoint matches"):
        trainer.test(model, datamodule=datamodule, verbose=False)
    assert "test/sample_class_entropy" not in trainer.callback_metrics


def test_frozen_encoder_stays_fixed_and_fine_tuned_one_moves(fake_root, tmp_path):
    for freeze in (True, False):
        model, datamodule = build("mnist_classifier", fake_root, f"--model.freeze_encoder={freeze}")
        before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        fit_briefly(model, datamodule, tmp_path)
        after = model.encoder.state_dict()
        moved = [not torch.equal(before[k], after[k]) for k in before]
        assert all(moved) != freeze and any(moved) != freeze
        assert all(p.requires_grad != freeze for p in model.encoder.parameters())


def test_classifier_loads_the_encoder_of_a_vae_checkpoint(fake_root, tmp_path):
    vae = VAE(ConvEncoder(20, [8, 8]), MLPDecoder(10, [16]))
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": vae.state_dict()}, path)
    classifier = EncoderClassifier(ConvEncoder(20, [8, 8]), encoder_checkpoint=str(path))
    classifier.setup("fit")
    for key, value in vae.encoder.state_dict().items():
        torch.testing.assert_close(classifier.encoder.state_dict()[key], value)
    with pytest.raises(ValueError, match="does not match the configured encoder"):
        EncoderClassifier(ConvEncoder(20, [4, 8]), encoder_checkpoint=str(path)).setup("fit")
    with pytest.raises(ValueError, match="no encoder checkpoint matches"):
        EncoderClassifier(ConvEncoder(20), encoder_checkpoint="nowhere/*.ckpt").setup("fit")
