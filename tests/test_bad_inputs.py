"""Every bad input ends in one ``error:`` line and exit code 1, before anything is written."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoencoders.data.images import UserImages, mnist_like
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
     "junk.ckpt is not a checkpoint this project wrote (no weights-only torch file; "
     "checkpoints are never loaded with code)"),
    ("test --config vae --ckpt_path cut.ckpt",
     "cut.ckpt is not a checkpoint this project wrote (PytorchStreamReader failed"),
    (f"test --config vae --ckpt_path {AAE_CHECKPOINT}",
     f"{AAE_CHECKPOINT} is a checkpoint of AdversarialAutoencoder, not of VAE"),
    (f"predict --config vae --ckpt_path {AAE_CHECKPOINT}",
     f"{AAE_CHECKPOINT} is a checkpoint of AdversarialAutoencoder, not of VAE"),
    ("fit --config classifier_fashion_finetune "
     f"--model.init_args.encoder_checkpoint={AAE_CHECKPOINT}",
     f"{AAE_CHECKPOINT} has no encoder weights"),
    ("fit --config classifier_fashion_finetune --model.init_args.encoder_checkpoint=junk.ckpt",
     "junk.ckpt is not a checkpoint this project wrote"),
    ("test --config vae --trainer.callbacks+=autoencoders.callbacks.PriorSampleGrid "
     f"--trainer.callbacks.init_args.classifier_checkpoint={AAE_CHECKPOINT}",
     f"{AAE_CHECKPOINT} is a checkpoint of AdversarialAutoencoder, not of EncoderClassifier "
     "(classifier_checkpoint"),
    ("fit --config ae_mnist --data.root=BROKEN",
     "BROKEN/MNIST/raw/train-images-idx3-ubyte is cut short or corrupt (2352008 bytes, its "
     "header promises 4704016)"),
    ("fit --config anomaly_pneumonia --data.root=BROKEN",
     "BROKEN/pneumoniamnist.npz is cut short or corrupt (File is not a zip file)"),
    ("fit --config ae_mnist --data.root=nowhere", "MNIST not found under the data root"),
    ("fit --config anomaly_pneumonia --data.root=nowhere",
     "PneumoniaMNIST not found under the data root"),
]  # fmt: skip


@pytest.fixture(scope="module")
def broken_root(fake_root, tmp_path_factory) -> Path:
    """The fake data with the MNIST training images and the PneumoniaMNIST file cut in half."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(fake_root, root, dirs_exist_ok=True)
    for file in (root / "MNIST/raw/train-images-idx3-ubyte", root / "pneumoniamnist.npz"):
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return root


@pytest.mark.parametrize(("command", "line"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_prints_one_line(command, line, fake_root, broken_root):
    Path("junk.ckpt").write_text("not a checkpoint")
    aae = {"_class_path": "autoencoders.models.AdversarialAutoencoder"}
    torch.save({"state_dict": {"disc_z.weight": torch.ones(1)}, "hyper_parameters": aae},
               AAE_CHECKPOINT)  # fmt: skip
    whole = Path(AAE_CHECKPOINT).read_bytes()
    Path("cut.ckpt").write_bytes(whole[: len(whole) // 2])  # a save killed halfway
    args = command.replace("BROKEN", str(broken_root)).split()
    if "--data.root" not in command:
        args.append(f"--data.root={fake_root}")
    with pytest.raises(SystemExit) as exit:
        cli_main(args)
    message = str(exit.value.code)
    assert message.startswith(f"error: {line.replace('BROKEN', str(broken_root))}"), message
    assert "\n" not in message, message
    assert not Path("runs").exists(), "nothing written"
    assert not Path("nowhere").exists(), "a failed download leaves no folders"


def reference_digit() -> Image.Image:
    """A 7-like digit in dark ink on grey paper, not symmetric (so a turn would show)."""
    array = np.full((80, 60), 225, dtype=np.uint8)
    array[10:18, 8:52] = 20  # the bar on top
    array[10:70, 44:52] = 20  # the stem on the right
    return Image.fromarray(array, "L")


def sixteen_bit(path: Path) -> None:
    grey = np.asarray(reference_digit(), dtype=np.uint16) * 257
    Image.fromarray(grey).save(path)  # mode I;16


def transparent_paper(path: Path) -> None:
    ink = 255 - np.asarray(reference_digit())  # opaque where the ink is, clear elsewhere
    rgba = np.zeros((*ink.shape, 4), dtype=np.uint8)  # black under the clear pixels too
    rgba[..., 3] = np.where(ink > 100, 255, 0)
    Image.fromarray(rgba, "RGBA").save(path)


def exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to view
    reference_digit().transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


def truncated(path: Path) -> None:
    reference_digit().save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (file, how it is written, what predict makes of it: "same" = the reference digit's 28x28
# input, or the start of the line that skips it); Pillow's decompression-bomb limit is lowered
# to 30000 pixels for the test: the 60 x 80 reference passes, the 180 x 240 "huge" image not
PHOTOS = [
    ("sixteen_bit.png", sixteen_bit, "same"),
    ("cmyk.jpg", lambda path: reference_digit().convert("CMYK").save(path, quality=95), "same"),
    ("transparent.png", transparent_paper, "same"),
    ("exif_rotated.jpg", exif_rotated, "same"),
    ("truncated.jpg", truncated, "skipping {file}: cannot read it as an image (image file is "
                                 "truncated"),
    ("huge.png", lambda path: reference_digit().resize((180, 240)).save(path),
     "skipping {file}: cannot read it as an image (Image size (43200 pixels) exceeds limit of "
     "30000 pixels"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "write", "read"), PHOTOS, ids=[p[0] for p in PHOTOS])
def test_a_photo_is_read_as_seen_or_skipped_in_one_line(name, write, read, tmp_path, capfd,
                                                        monkeypatch):  # fmt: skip
    reference = mnist_like(reference_digit())
    write(tmp_path / name)
    reference_digit().save(tmp_path / "reference.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30000)
    images = UserImages(tmp_path)
    lines = capfd.readouterr().err.strip().splitlines()
    if read == "same":
        assert [p.name for p in images.paths] == sorted([name, "reference.png"]) and not lines
        photo = images.images[images.paths.index(tmp_path / name)]
        assert (photo - reference).abs().mean() < 0.02, (photo - reference).abs().mean()
    else:
        assert [p.name for p in images.paths] == ["reference.png"]
        assert len(lines) == 1 and lines[0].startswith(read.format(file=tmp_path / name)), lines
