"""The CLI over every shipped config, plus what a user expects around a run."""

import contextlib
import functools
import io
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.__main__ import CONFIGS, cli_main, main, resolve_config
from tests.helpers import CONFIG_FILES, CONFIG_IDS, pretrained, run_module, short


@pytest.mark.parametrize("config", CONFIG_FILES, ids=CONFIG_IDS)
def test_every_config_runs_fast_dev_run(config, fake_root, encoder_checkpoint):
    args = [
        "fit",
        "--config",
        str(config),
        f"--data.root={fake_root}",
        "--trainer.fast_dev_run=true",
        *pretrained(config, encoder_checkpoint),
    ]
    cli = main(args)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    cli.trainer.save_checkpoint("every_config.ckpt")  # every callback's state included
    state = torch.load("every_config.ckpt", weights_only=True)  # tensors and primitives only
    assert state["state_dict"].keys() == cli.model.state_dict().keys()


def test_trainer_flags_pass_through(fake_root):
    flags = ["--trainer.precision=bf16-mixed", "--trainer.accelerator=cpu"]
    cli = main(["fit", "--config", "conv_ae_fashion", *short(fake_root, *flags)])
    assert cli.trainer.precision == "bf16-mixed"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_bare_names_resolve_to_the_shipped_configs(tmp_path):
    assert resolve_config("ae_mnist") == str(CONFIGS / "ae_mnist.yaml")
    assert resolve_config("ae_mnist.yaml") == str(CONFIGS / "ae_mnist.yaml")
    local = tmp_path / "ae_mnist.yaml"
    local.write_text("seed_everything: 1\n")
    assert resolve_config(str(local)) == str(local), "a file in the working directory wins"


def short_fit(fake_root, *extra, config="ae_mnist"):
    return main(
        ["fit", "--config", config, *short(fake_root, "--trainer.log_every_n_steps=1", *extra)]
    )


def test_a_run_writes_scalars_images_and_best_and_last_checkpoints(fake_root):
    short_fit(fake_root)
    run = Path("runs/ae_mnist/version_0")
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(c.startswith("best") for c in checkpoints)
    events = EventAccumulator(str(run)).Reload()
    assert {"train/loss", "val/loss", "val/mse"} <= set(events.Tags()["scalars"])
    assert "val/reconstructions" in events.Tags()["images"]
    assert (run / "config.yaml").is_file()
    short_fit(fake_root)
    assert Path("runs/ae_mnist/version_1").is_dir(), "a second run gets its own version"


def test_last_checkpoint_is_the_latest_epoch_not_the_best(fake_root):
    """Lightning 2.6 writes last.ckpt only when a best checkpoint is saved; ours is the latest
    epoch. Monitoring the epoch number with mode=min makes epoch 0 the only best one."""
    cli = short_fit(fake_root, "--trainer.max_epochs=3", "--checkpoint.monitor=epoch")
    folder = Path(cli.trainer.log_dir) / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, cli.trainer.global_step)


def test_resume_continues_exactly(fake_root):
    """Two epochs in one go equal one epoch, then a resume from its last checkpoint: same data
    order and same dropout masks (conv_ae_fashion has dropout 0.2)."""
    config, batches = "conv_ae_fashion", "--trainer.limit_train_batches=4"
    straight = short_fit(fake_root, batches, "--trainer.max_epochs=2", config=config)
    short_fit(fake_root, batches, config=config)
    last = f"runs/{config}/version_1/checkpoints/last.ckpt"
    resumed = short_fit(
        fake_root, batches, "--trainer.max_epochs=2", f"--ckpt_path={last}", config=config
    )
    assert resumed.trainer.global_step == straight.trainer.global_step == 8
    pairs = zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    )
    for (name, a), b in pairs:
        torch.testing.assert_close(a, b, msg=name, equal_nan=True)  # NaN: no threshold


VARIANTS = [c for c in CONFIG_FILES if c.read_text().startswith("# base:")]


@functools.cache
def printed_config(config: str) -> dict:
    """What ``fit --config CONFIG --print_config`` prints, parsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["fit", "--config", config, "--print_config"])
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("variant", VARIANTS, ids=[c.stem for c in VARIANTS])
def test_a_variant_config_is_its_base_with_its_changes(variant):
    """A variant holds only what differs; --print_config shows the whole resolved config, and
    no two configs copy a model block."""
    base = resolve_config(variant.read_text().splitlines()[0].removeprefix("# base:").strip())
    resolved, of_base = printed_config(str(variant)), printed_config(base)
    changes = yaml.safe_load(variant.read_text())
    for section in ("model", "data", "trainer"):
        assert resolved[section].keys() == of_base[section].keys(), section
    assert resolved["model"]["class_path"] == changes.get("model", {}).get(
        "class_path", of_base["model"]["class_path"]
    )
    assert resolved != of_base, "a variant changes something"
    base_model = yaml.safe_load(Path(base).read_text())["model"]["init_args"]
    changed = changes.get("model", {}).get("init_args", {})
    assert len(changed) < len(base_model), "the variant copies its base's model block"


def hparams_of(run: Path) -> tuple[set[str], set[str]]:
    """The hyper-parameter names and metric tags of a run's HPARAMS summary."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = EventAccumulator(str(run)).Reload().PluginTagToContent("hparams")
    data = {k: plugin_data_pb2.HParamsPluginData.FromString(v) for k, v in content.items()}
    session = data["_hparams_/session_start_info"].session_start_info
    experiment = data["_hparams_/experiment"].experiment
    return set(session.hparams), {m.name.tag for m in experiment.metric_infos}


def test_test_and_predict_land_in_the_checkpoints_run(fake_root, tmp_path):
    """A checkpoint inside a run folder tests into that run (a ``test/`` sub-run, then
    ``test_1/``) and predicts beside it; a checkpoint from elsewhere gets a run of its own."""
    short_fit(fake_root)
    run = Path("runs/ae_mnist/version_0")
    last = f"--ckpt_path={run}/checkpoints/last.ckpt"
    tested = main(["test", "--config", "ae_mnist", *short(fake_root, last)])
    assert "test/mse" in tested.trainer.callback_metrics
    assert Path(tested.trainer.log_dir) == run / "test"
    assert "test/mse" in EventAccumulator(str(run / "test")).Reload().Tags()["scalars"]
    assert (run / "config.yaml").read_text() != (run / "test/config.yaml").read_text()
    params, metrics = hparams_of(run / "test")
    assert {"noise_std", "encoder", "encoder/latent_dim", "data/batch_size"} <= params
    assert {"test/mse", "test/loss"} <= metrics
    again = main(["test", "--config", "ae_mnist", *short(fake_root, last)])
    assert Path(again.trainer.log_dir) == run / "test_1"
    writer = "--trainer.callbacks+=autoencoders.callbacks.PredictionWriter"
    predicted = main(["predict", "--config", "ae_mnist", *short(fake_root, last, writer)])
    batches = predicted.trainer.predict_loop.predictions
    assert sum(len(b["score"]) for b in batches) == len(predicted.datamodule.test_set)
    assert all(b["reconstruction"].shape[1:] == (1, 28, 28) for b in batches)
    rows = (run / "predict/predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + len(predicted.datamodule.test_set)
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    elsewhere = tmp_path / "elsewhere.ckpt"
    elsewhere.write_bytes((run / "checkpoints/last.ckpt").read_bytes())
    main(["test", "--config", "ae_mnist", *short(fake_root, f"--ckpt_path={elsewhere}")])
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0", "version_1"]


def test_a_scheduled_learning_rate_is_logged(fake_root):
    cli = main(["fit", "--config", "mnist_classifier",
                *short(fake_root, "--trainer.log_every_n_steps=1")])  # fmt: skip
    scalars = EventAccumulator(cli.trainer.log_dir).Reload().Tags()["scalars"]
    assert any(tag.startswith("lr-") for tag in scalars), scalars


def test_command_line_model_arguments_win_over_the_checkpoint(fake_root, monkeypatch):
    """Lightning 2.6 applies a checkpoint's hyperparameters over the command line; ours win."""
    from experiments.__main__ import CLI

    short_fit(fake_root, "--model.init_args.noise_std=0.2")
    last = "--ckpt_path=runs/ae_mnist/version_0/checkpoints/last.ckpt"
    monkeypatch.setattr(CLI, "_run_subcommand", lambda self, subcommand: None)
    kept = main(["test", "--config", "ae_mnist", *short(fake_root, last)])
    assert kept.model.hparams.noise_std == 0.2, "the checkpoint's value over the config's 0"
    changed = main(
        [
            "test",
            "--config",
            "ae_mnist",
            *short(fake_root, last),
            "--model.init_args.noise_std",
            "0.3",
        ]
    )
    assert changed.model.hparams.noise_std == 0.3
    assert changed.config.test.ckpt_path.endswith("last.ckpt")
    assert changed.config.test.data.init_args.val_size == 1000


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(fake_root, tmp_path):
    """A real 2-process DDP fit through the CLI: each rank reads its own shard."""
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
           "--trainer.limit_train_batches=null", "--data.batch_size=500",
           "--trainer.callbacks+=tests.shard_recorder.ShardRecorder",
           f"--trainer.callbacks.init_args.folder={tmp_path}"]  # fmt: skip
    result = run_module("fit", "--config", "ae_mnist", *short(fake_root, *ddp), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    shards = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == (6000 - 1000) // 2
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert (tmp_path / "runs/ae_mnist/version_0/checkpoints/last.ckpt").is_file()


@pytest.mark.parametrize(
    ("config", "module", "term"),
    [("vae", "decoder", "train/loss"), ("aae", "disc_z", "train/disc_z")],
)
def test_a_non_finite_loss_stops_the_run_and_spares_the_checkpoint(
    config, module, term, fake_root, tmp_path
):
    """Weights turned NaN in epoch 1: one line names the batch and the term, the exit code is
    not 0, and epoch 0's last.ckpt is left as it was."""
    poison = ["--trainer.callbacks+=tests.poison.Poison",
              f"--trainer.callbacks.init_args.module={module}"]  # fmt: skip
    args = short(fake_root, "--trainer.max_epochs=2", "--trainer.limit_val_batches=2", *poison)
    with pytest.raises(SystemExit) as exit:
        cli_main(["fit", "--config", config, *args])
    line = str(exit.value.code)
    assert line.startswith("error: non-finite training loss at batch 1 of epoch 1"), line
    assert f"{term} = nan" in line and "\n" not in line
    last = torch.load(
        tmp_path / f"runs/{config}/version_0/checkpoints/last.ckpt", weights_only=True
    )
    weights = {k: v for k, v in last["state_dict"].items() if k != "anomaly_threshold"}  # NaN: none
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in weights.values())


def test_a_non_finite_loss_can_only_warn(fake_root):
    from autoencoders.callbacks import NonFiniteGuard

    poison = ["--trainer.callbacks+=tests.poison.Poison",
              "--trainer.callbacks.init_args.module=decoder", "--nonfinite.mode=warn"]  # fmt: skip
    with pytest.warns(UserWarning, match="non-finite training loss at batch 1 of epoch 1"):
        cli = main(
            ["fit", "--config", "ae_mnist", *short(fake_root, "--trainer.max_epochs=2", *poison)]
        )
    assert cli.trainer.current_epoch == 2, "trained on"
    guard = next(c for c in cli.trainer.callbacks if isinstance(c, NonFiniteGuard))
    assert guard.warned


def test_the_non_finite_guard_reads_the_device_every_n_steps_and_before_a_checkpoint(monkeypatch):
    """A step only queues its terms: no arithmetic and no host sync until the N-th batch,
    which names the batch where the fault happened; a checkpoint is refused at once."""
    from types import SimpleNamespace

    from autoencoders.callbacks import NonFiniteGuard, NonFiniteLoss

    loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=7))
    trainer = SimpleNamespace(current_epoch=2, fit_loop=loop)
    reads, original = [], torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(t) or original(t))
    checks, isfinite = [], torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: checks.append(t) or isfinite(t))
    guard = NonFiniteGuard(every_n_steps=3)

    def step(batch_idx, loss):
        outputs = {"loss": torch.tensor(loss), "train/kl": torch.tensor(0.5)}
        guard.on_train_batch_end(trainer, None, outputs, None, batch_idx)

    step(0, 1.0)
    step(1, float("nan"))
    assert reads == [] and checks == [], "no host sync and no check before the third batch"
    with pytest.raises(NonFiniteLoss, match=r"^non-finite training loss at batch 1 of epoch 2 "
                       r"\(batches trained: 7\): train/loss = nan;"):  # fmt: skip
        step(2, 2.0)
    step(0, float("inf"))
    with pytest.raises(NonFiniteLoss, match="batch 0 of epoch 2 .*: train/loss = inf;"):
        guard.on_save_checkpoint(trainer, None, {})
    step(0, 1.0)
    guard.on_save_checkpoint(trainer, None, {})  # finite: nothing raised, queue emptied
    assert guard.queue == []
