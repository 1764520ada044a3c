"""Writes ``predict`` outputs to a CSV file."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torchvision.utils import save_image


class PredictionWriter(BasePredictionWriter):
    """Writes one CSV row per predicted image: its path (or index), then every tensor the
    model's ``predict_step`` returned with one value per image (label, probability, score...).

    With ``save_inputs`` each image is also written as the model saw it (for photos: the
    prepared 28x28 digit) to ``inputs/`` beside the CSV, whose ``input`` column names it.

    Args:
        output: CSV path; defaults to ``predictions.csv`` in the run's log directory.
        save_inputs: write the model's input images as PNG files.
    """

    def __init__(self, output: str | None = None, save_inputs: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.save_inputs = save_inputs
        self.path: Path | None = None

    def on_predict_start(self, trainer, pl_module) -> None:
        folder = Path(trainer.log_dir or ".")
        self.path = Path(self.output) if self.output else folder / "predictions.csv"
        if trainer.world_size > 1:
            self.path = self.path.with_name(f"{self.path.stem}_rank{trainer.global_rank}.csv")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        columns = {
            k: v.tolist()
            for k, v in prediction.items()
            if isinstance(v, torch.Tensor) and v.dim() == 1
        }
        paths = getattr(trainer.datamodule, "predict_paths", None)
        names = [str(paths[i]) if paths else str(i) for i in batch_indices]
        if self.save_inputs:
            folder = self.path.parent / "inputs"
            folder.mkdir(exist_ok=True)
            files = [
                folder / f"{i:06d}_{Path(name).stem}.png"
                for i, name in zip(batch_indices, names, strict=True)
            ]
            for image, file in zip(batch[0], files, strict=True):
                save_image(image.float().clamp(0, 1), file)
            columns = {"input": [str(f) for f in files], **columns}
        new_file = self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(["path", *columns])
            for row, name in enumerate(names):
                writer.writerow([name, *(_fmt(values[row]) for values in columns.values())])

    def on_predict_end(self, trainer, pl_module) -> None:
        print(f"predictions written to {self.path}")


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
