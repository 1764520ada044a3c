"""The GPU path, skipped where there is no CUDA device (the rest of the suite runs with
``accelerator: auto``, so on a GPU machine every config's fast_dev_run uses the GPU too)."""

from pathlib import Path

import pytest
import torch

from experiments import bench
from experiments.__main__ import CONFIGS, main
from tests.helpers import pretrained, short

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("config", ["aae", "ssvae", "classifier_mnist_finetune"])
def test_trained_on_the_gpu_in_bf16_tested_on_the_cpu(config, fake_root, encoder_checkpoint):
    """Train on a GPU with mixed precision, then score the checkpoint on a laptop: the CPU
    model classifies like the GPU model did."""
    extra = pretrained(CONFIGS / f"{config}.yaml", encoder_checkpoint)
    gpu = ["--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed"]
    fitted = main(["fit", "--config", config, *short(fake_root, *gpu, *extra)])
    assert fitted.trainer.strategy.root_device.type == "cuda"
    assert torch.isfinite(fitted.trainer.callback_metrics["train/loss"])

    last = Path(fitted.trainer.log_dir) / "checkpoints/last.ckpt"
    cpu = ["--trainer.accelerator=cpu", f"--ckpt_path={last}", *extra]
    tested = main(["test", "--config", config, *short(fake_root, *cpu)])
    assert 0 <= tested.trainer.callback_metrics["test/acc"] <= 1

    x = torch.rand(8, 1, 28, 28)
    on_gpu = fitted.model.float().cuda().eval().classify(x.cuda()).cpu()
    on_cpu = tested.model.float().eval().classify(x)
    torch.testing.assert_close(on_cpu, on_gpu, atol=1e-3, rtol=1e-3)


def test_images_held_on_the_gpu_train_there(fake_root):
    """``on_device``: the training images live in the GPU's memory and batches arrive there."""
    gpu = ["--trainer.accelerator=gpu", "--trainer.devices=1", "--data.init_args.on_device=true"]
    fitted = main(["fit", "--config", "vae", *short(fake_root, *gpu)])
    assert fitted.datamodule.train_set.images.is_cuda
    assert torch.isfinite(fitted.trainer.callback_metrics["train/loss"])


def test_the_speed_bench_times_every_way_on_the_gpu(fake_root, tmp_path, monkeypatch):
    """``bench speed --device cuda``: the raw loop, the bare fit and the shipped fit all train
    on the GPU, into a section of their own (the CPU table stays)."""
    from experiments import speed

    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setenv("AUTOENCODERS_DATA", fake_root)
    monkeypatch.chdir(tmp_path)
    devices = {"raw": set(), "fit": set()}  # where each way's steps ran
    step = speed.raw_step

    def raw_step(model, optimizers, batch, i):
        devices["raw"].add(model.device.type)
        return step(model, optimizers, batch, i)

    class Timer(speed.StepTimer):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            devices["fit"].add(pl_module.device.type)
            super().on_train_batch_end(trainer, pl_module, *args)

    monkeypatch.setattr(speed, "raw_step", raw_step)
    monkeypatch.setattr(speed, "StepTimer", Timer)
    bench.main(["speed", "--configs", "vae", "aae", "--warmup", "1", "--steps", "2",
                "--rounds", "1", "--device", "cuda"])  # fmt: skip
    assert devices == {"raw": {"cuda"}, "fit": {"cuda"}}
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:speed_cuda -->" in text and "<!-- bench:speed -->" not in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["vae", "aae"]
