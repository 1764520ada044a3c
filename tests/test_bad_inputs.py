"""Every bad input ends in one ``error:`` line and exit code 1, before anything is written."""

from pathlib import Path

import pytest
import torch

from experiments.__main__ import cli_main

AAE_CHECKPOINT = "aae.ckpt"  # written by the test: a checkpoint of another family than vae's

# (command line after `python -m experiments`, the start of the line it prints)
CASES = [
    ("fit --config ae_mnist --data.batch_size=0", "batch_size=0 must be a positive number"),
    ("fit --config aae --data.init_args.labels_per_class=0",
     "labels_per_class must be a positive count, got 0"),
    ("fit --config aae --data.init_args.labels_per_class=null "
     "--data.init_args.labeled_fraction=1.5", "labeled_fraction must be in (0, 1], got 1.5"),
    ("fit --config aae --model.init_args.augment.init_args.max_scale=1.0",
     "Augment needs max_shift >= 0, max_degrees >= 0 and 0 <= max_scale < 1"),
    ("fit --config aae --model.init_args.consistency.init_args.threshold=2",
     "Consistency needs weight >= 0, balance_weight >= 0 and 0 <= threshold <= 1"),
    ("fit --config vae --model.init_args.iwae_chunk=0", "iwae_chunk=0 must be positive"),
    ("test --config vae --ckpt_path missing.ckpt", "no checkpoint file missing.ckpt"),
    ("test --config vae --ckpt_path junk.ckpt",
     "junk.ckpt is not a checkpoint this project wrote"),
    (f"test --config vae --ckpt_path {AAE_CHECKPOINT}",
     f"{AAE_CHECKPOINT} is a checkpoint of AdversarialAutoencoder, and this config builds VAE"),
    (f"predict --config vae --ckpt_path {AAE_CHECKPOINT}",
     f"{AAE_CHECKPOINT} is a checkpoint of AdversarialAutoencoder, and this config builds VAE"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "line"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_prints_one_line(command, line, fake_root):
    Path("junk.ckpt").write_text("not a checkpoint")
    torch.save(
        {"hyper_parameters": {"_class_path": "autoencoders.models.AdversarialAutoencoder"}},
        AAE_CHECKPOINT,
    )
    with pytest.raises(SystemExit) as exit:
        cli_main([*command.split(), f"--data.root={fake_root}"])
    message = str(exit.value.code)
    assert message.startswith(f"error: {line}") and "\n" not in message, message
    assert not Path("runs").exists(), "nothing written"
