"""Runs that survive being stopped: a run killed inside a training step resumes from its newest
step-interval ``last.ckpt`` (``fit --ckpt_path last``) and ends with the weights and optimizer
states of the run that was never stopped, on one CPU thread."""

import os

import pytest
import torch

from experiments.__main__ import main
from tests.helpers import run_module, short

BATCHES, EPOCHS = 3, 2  # six batches; last.ckpt after batches 2 and 4; killed after it


def arguments(root: str, *extra: str) -> list[str]:
    return short(root, f"--trainer.max_epochs={EPOCHS}", "--data.batch_size=20", *extra,
                 train_batches=BATCHES)  # fmt: skip


def states(cli) -> dict[str, torch.Tensor]:
    """The model's weights and every optimizer's state."""
    found = dict(cli.model.state_dict())
    for i, optimizer in enumerate(cli.trainer.optimizers):
        for key, value in optimizer.state_dict()["state"].items():
            found |= {f"optimizer{i}.{key}.{name}": v for name, v in value.items()}
    return found


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def straight_runs(fake_root, tmp_path_factory) -> dict:
    """``straight_runs(config)``: the uninterrupted run of ``config``, made once."""
    runs = {}

    def run(config: str):
        if config not in runs:
            cwd, threads = os.getcwd(), torch.get_num_threads()
            os.chdir(tmp_path_factory.mktemp("straight"))
            torch.set_num_threads(1)
            try:
                runs[config] = main(["fit", "--config", config, *arguments(fake_root)])
            finally:
                os.chdir(cwd)
                torch.set_num_threads(threads)
        return runs[config]

    return run


# (config, signal, batches in the newest checkpoint): the kill comes before optimizer step
# 4 * per_batch + 2, inside batch 5 of the AAE (4 steps a batch) and batch 6 of the SSVAE (1).
# SIGKILL and Ctrl-C stop the run there, so the checkpoint of batch 4 is the newest; on SIGTERM
# Lightning finishes the AAE's batch 5 and CheckpointOnSIGTERM writes last.ckpt there.
CASES = [("aae", "SIGKILL", 4), ("aae", "SIGTERM", 5), ("ssvae", "SIGINT", 4)]


@pytest.mark.slow
@pytest.mark.parametrize(("config", "signal", "saved"), CASES)
def test_a_run_killed_mid_epoch_resumes_exactly(
    config, signal, saved, fake_root, tmp_path, monkeypatch, one_thread, straight_runs
):
    (tmp_path / "killed").mkdir()
    straight = straight_runs(config)
    per_batch = straight.trainer.global_step // (BATCHES * EPOCHS)  # optimizer steps a batch
    every = f"--last_checkpoint.every_n_train_steps={2 * per_batch}"

    kill = ["--trainer.callbacks+=tests.kill.Kill",
            f"--trainer.callbacks.init_args.signal={signal}",
            f"--trainer.callbacks.init_args.step={4 * per_batch + 2}"]  # fmt: skip
    killed = run_module("fit", "--config", config, *arguments(fake_root, every, *kill),
                        cwd=tmp_path / "killed", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert killed.returncode != 0, killed.stderr[-2000:]
    if signal == "SIGTERM":
        assert killed.stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM")
    last = torch.load(
        tmp_path / f"killed/runs/{config}/version_0/checkpoints/last.ckpt", weights_only=True
    )
    assert last["global_step"] == saved * per_batch, f"the newest checkpoint: batch {saved}"
    in_epoch = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    assert in_epoch == saved - BATCHES, "inside the second epoch"

    monkeypatch.chdir(tmp_path / "killed")
    resumed = main(["fit", "--config", config, *arguments(fake_root, every, "--ckpt_path=last")])
    assert resumed.trainer.log_dir.endswith("version_0"), "the resumed run continues its folder"
    assert resumed.trainer.global_step == straight.trainer.global_step
    one, two = states(straight), states(resumed)
    assert one.keys() == two.keys() and len(one) > 10
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=0, equal_nan=True, msg=name)
