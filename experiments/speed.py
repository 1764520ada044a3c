"""Training speed three ways, for ``python -m experiments.bench speed``.

For a config, seconds per 1000 training batches:

- ``raw``: a plain PyTorch loop over the config's own model, data loader and optimizers. The
  model's ``training_step`` runs with Lightning's few hooks into the trainer replaced by their
  PyTorch equivalents (``loss.backward()`` for ``manual_backward``, the optimizers themselves
  for ``optimizers()``, ``requires_grad`` toggled by hand, ``log`` doing nothing), so the step's
  arithmetic is the shipped one and nothing else runs;
- ``fit, bare``: ``Trainer.fit`` of the same model and data with no callbacks, no logger, no
  progress bar, no checkpoints and no validation;
- ``fit, shipped``: ``python -m experiments fit --config CONFIG`` as shipped (logger, progress
  bar, every callback, checkpoints), validation off.

Each way runs ``warmup + steps`` batches on ``device`` (the CPU by default, ``cuda`` for a GPU)
and times the last ``steps``; on a GPU the clock is read after the device has finished its
queued work, and the raw loop copies each batch as the fits do (pinned, non-blocking).
"""

from __future__ import annotations

import contextlib
import tempfile
import time

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning import Callback, Trainer
from pytorch_lightning.utilities import CombinedLoader


def synchronize(device: str) -> None:
    """Waits for the work queued on ``device`` (a GPU runs its kernels after the host moves on)."""
    if torch.device(device).type != "cpu":
        torch.accelerator.synchronize()


def to_device(batch, device: str):
    """``batch`` on ``device`` as the fits get it: pinned and copied without blocking on a GPU."""
    if torch.device(device).type == "cpu":
        return batch
    return apply_to_collection(
        batch, torch.Tensor, lambda t: t.pin_memory().to(device, non_blocking=True)
    )


class StepTimer(Callback):
    """Times ``steps`` training batches after ``warmup`` untimed ones (``seconds``), then ends
    the fit (``max_steps`` counts optimizer steps: 4 a batch for the adversarial autoencoder)."""

    def __init__(self, warmup: int, steps: int, device: str = "cpu") -> None:
        self.warmup, self.steps, self.batches, self.start, self.seconds = warmup, steps, 0, 0, 0
        self.device = device

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.batches == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup + self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            trainer.should_stop = True


def build(config: str, root: str | None, *extra: str):
    """The model and data module of ``config`` as the CLI builds them, and the CLI's trainer."""
    from experiments.__main__ import main

    args = ["--config", config, *([f"--data.root={root}"] if root else []), *extra]
    cli = main(args, run=False)
    return cli.model, cli.datamodule


def batches(datamodule, n: int):
    """``n`` training batches, cycling the data module's training loader."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader, done = datamodule.train_dataloader(), 0
    combined = isinstance(loader, CombinedLoader)  # yields (batch, batch_idx, loader_idx)
    while True:
        for item in loader:
            yield item[0] if combined else item
            done += 1
            if done == n:
                return


@contextlib.contextmanager
def toggled(model, optimizer):
    """Only ``optimizer``'s parameters require gradients (Lightning's ``toggle_optimizer``)."""
    own = {id(p) for group in optimizer.param_groups for p in group["params"]}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def optimizers_of(model) -> list[torch.optim.Optimizer]:
    """The optimizers that ``configure_optimizers`` builds (schedulers left out)."""
    built = model.configure_optimizers()
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], list):
        built = built[0]  # (optimizers, schedulers)
    items = built if isinstance(built, list | tuple) else [built]
    return [item["optimizer"] if isinstance(item, dict) else item for item in items]


def raw_trainable(model) -> list[torch.optim.Optimizer]:
    """Makes ``model.training_step`` runnable without a Trainer, with PyTorch's own calls where
    Lightning's would be; returns the optimizers (``raw_step`` steps them)."""
    optimizers = optimizers_of(model)
    model.train()
    model.log = model.log_dict = lambda *args, **kwargs: None
    if not model.automatic_optimization:
        model.optimizers = lambda: optimizers[0] if len(optimizers) == 1 else optimizers
        model.manual_backward = lambda loss, *args, **kwargs: loss.backward()
        model.toggled_optimizer = lambda optimizer: toggled(model, optimizer)
    return optimizers


def raw_step(model, optimizers: list[torch.optim.Optimizer], batch, i: int):
    """One training batch of ``model`` (made ``raw_trainable``) in plain PyTorch; returns what
    the step returned."""
    if not model.automatic_optimization:
        return model.training_step(batch, i)
    optimizers[0].zero_grad()
    out = model.training_step(batch, i)
    (out["loss"] if isinstance(out, dict) else out).backward()
    optimizers[0].step()
    return out


def raw_seconds(
    config: str, root: str | None, warmup: int, steps: int, *extra: str, device: str = "cpu"
) -> float:
    """The ``raw`` way: the model's own step in a plain loop."""
    model, datamodule = build(config, root, *extra)
    model.to(device)
    optimizers, start = raw_trainable(model), None
    for i, batch in enumerate(batches(datamodule, warmup + steps)):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        raw_step(model, optimizers, to_device(batch, device), i)
    synchronize(device)
    return time.perf_counter() - start


def bare_fit_seconds(
    config: str, root: str | None, warmup: int, steps: int, *extra: str, device: str = "cpu"
) -> float:
    """The ``fit, bare`` way: a Trainer with nothing switched on."""
    model, datamodule = build(config, root, *extra)
    timer = StepTimer(warmup, steps, device)
    trainer = Trainer(
        max_steps=-1, max_epochs=-1, limit_train_batches=None, limit_val_batches=0,
        logger=False, callbacks=[timer], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        accelerator=torch.device(device).type, devices=1,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return timer.seconds


def shipped_fit_seconds(
    config: str, root: str | None, warmup: int, steps: int, *extra: str, device: str = "cpu"
) -> float:
    """The ``fit, shipped`` way: the CLI's ``fit`` with validation off; its TensorBoard logs and
    checkpoints go to a temporary folder, not ``runs/``."""
    from experiments.__main__ import main

    with tempfile.TemporaryDirectory(prefix="speed-") as scratch:
        cli = main(
            ["--config", config, *([f"--data.root={root}"] if root else []),
             "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
             f"--trainer.accelerator={torch.device(device).type}", "--trainer.devices=1",
             f"--trainer.logger.init_args.save_dir={scratch}", *extra],
            run=False,
        )  # fmt: skip
        timer = StepTimer(warmup, steps, device)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.seconds


WAYS = {"raw": raw_seconds, "fit, bare": bare_fit_seconds, "fit, shipped": shipped_fit_seconds}


FAMILIES = [
    "ae_mnist", "conv_ae_fashion", "vae", "gmvae", "ssvae", "aae", "classifier_fashion_finetune",
]  # fmt: skip


def speed_table(configs: list[str], root: str | None, warmup: int, steps: int, rounds: int,
                extra: dict[str, list[str]], device: str = "cpu") -> tuple[str, dict]:  # fmt: skip
    """Markdown rows (config, the three ways in seconds per 1000 batches, the fits' ratios to
    the raw loop) and the measured seconds; each way's best of ``rounds``, ways interleaved."""
    found, rows = {}, []
    for config in configs:
        best = {}
        for _ in range(rounds):
            for way, seconds in WAYS.items():
                args = extra.get(config, [])
                value = seconds(config, root, warmup, steps, *args, device=device) / steps * 1e3
                best[way] = min(best.get(way, value), value)
        found[config] = best
        raw = best["raw"]
        rows.append(
            f"| `{config}` | {raw:.2f} | {best['fit, bare']:.2f} ({best['fit, bare'] / raw:.2f}x)"
            f" | {best['fit, shipped']:.2f} ({best['fit, shipped'] / raw:.2f}x) |"
        )
    return "\n".join(rows), found


def pythae_seconds(root: str | None, warmup: int, steps: int, device: str = "cpu") -> float | None:
    """pythae's ``TrainingPipeline`` (its own loop, data loader and progress bar, no
    evaluation) on the ``vae`` config's network: 784-300-300 ELU MLPs, z = 10, Bernoulli
    decoder, batch 100, Adam 1e-3, on MNIST binarized once (pythae has no dynamic
    binarization). ``None`` when pythae is not importable: it is a peer to compare with,
    installed into a scratch folder on ``PYTHONPATH``, never a dependency of this project."""
    try:
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.pipelines import TrainingPipeline
        from pythae.trainers import BaseTrainerConfig
        from pythae.trainers.training_callbacks import TrainingCallback
    except ImportError:
        return None

    from autoencoders.data import MNISTDataModule
    from autoencoders.nn import MLPDecoder, MLPEncoder

    class Encoder(BaseEncoder):  # the vae config's networks, in pythae's wrappers
        def __init__(self):
            super().__init__()
            self.net = MLPEncoder(latent_dim=20, hidden=[300, 300], activation="elu")

        def forward(self, x):
            mean, log_var = self.net(x).chunk(2, dim=1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = MLPDecoder(latent_dim=10, hidden=[300, 300], activation="elu")

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    class Timer(TrainingCallback):
        batches, start, seconds = 0, 0.0, 0.0

        def on_train_step_end(self, training_config, **kwargs):
            self.batches += 1
            if self.batches == warmup:
                synchronize(device)
                self.start = time.perf_counter()
            if self.batches == warmup + steps:
                synchronize(device)
                self.seconds = time.perf_counter() - self.start

    datamodule = MNISTDataModule(root=root, batch_size=100, binarize="static")
    datamodule.prepare_data()
    datamodule.setup("fit")
    images = datamodule.train_set.images[: (warmup + steps) * 100].float().div(255)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=10, reconstruction_loss="bce")
    model = VAE(config, encoder=Encoder(), decoder=Decoder())
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        training = BaseTrainerConfig(
            output_dir=out, num_epochs=1, learning_rate=1e-3, per_device_train_batch_size=100,
            per_device_eval_batch_size=100, no_cuda=torch.device(device).type == "cpu",
        )  # fmt: skip
        TrainingPipeline(model=model, training_config=training)(
            train_data=images, callbacks=[timer]
        )
    return timer.seconds
