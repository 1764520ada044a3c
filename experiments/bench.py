"""Benchmarks that write their tables into ``BENCHMARKS.md``.

    python -m experiments.bench data                       # in-memory loader vs ToTensor DataLoader
    python -m experiments.bench augment                    # Augment vs kornia (when importable)
    python -m experiments.bench fit --configs ae_mnist --seeds 0 1 2 [--args --trainer.max_epochs 5]
    python -m experiments.bench fit --configs anomaly_pneumonia --test-also balanced_eval=false
    python -m experiments.bench test --config vae_large --ckpt-path CKPT [CKPT ...] --name NAME
    python -m experiments.bench scores --config anomaly_pneumonia --ckpt-path CKPT [CKPT ...]
    python -m experiments.bench table --name NAME          # rewrite a section from runs/bench/
    python -m experiments.bench figures [--ckpt aae=CKPT]  # README figures -> docs/figures/
    python -m experiments.bench photos --ckpt-path CKPT [CKPT ...]  # digit photos, no MNIST
    python -m experiments.bench speed [--configs vae aae]  # fit against a raw PyTorch loop

Each command replaces its own section of ``BENCHMARKS.md`` (between ``<!-- bench:NAME -->``
markers) and leaves the others alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

BENCHMARKS = Path("BENCHMARKS.md")
RECORDS = Path("runs/bench")
CHECKPOINTS = {
    "best": "best checkpoint (lowest `val/loss`)",
    "last": "last checkpoint (no model selection on labelled validation data)",
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.*)", cpuinfo.read_text())
        cpu = names[0] if names else cpu
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {device}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section ``name`` of BENCHMARKS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    BENCHMARKS.write_text(text)
    print(block)


def section_title(name: str) -> str | None:
    """The title the section ``name`` of BENCHMARKS.md has now, if it exists."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    found = re.search(rf"<!-- bench:{re.escape(name)} -->\n## (.*)\n", text)
    return found.group(1) if found else None


def header(
    title: str, command: str, machines: list[str] | None = None, commits: list[str] | None = None
) -> str:
    """A section's title, command, date, commit and machine (``machines``, ``commits``: the ones
    the runs recorded, so a table rebuilt elsewhere still names what measured its runs)."""
    from experiments.__main__ import git_commit

    where = "; ".join(machines) if machines else machine()
    code = ", ".join(commits) if commits else git_commit() or "?"
    return (
        f"## {title}\n\n- command: `{command}`\n- date: {date.today()}\n- commit: {code}\n"
        f"- machine: {where}\n"
    )


def mean_se(values: list[float]) -> str:
    if not values:  # a metric that older records did not have
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    se = statistics.stdev(values) / math.sqrt(len(values))
    return f"{statistics.mean(values):.4g} ± {se:.2g}"


def images_per_second(loader, epochs: int = 3) -> float:
    """Best of ``epochs`` full passes over ``loader``: images per second."""
    best = 0.0
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for x, _ in loader:
            count += len(x)
        best = max(best, count / (time.perf_counter() - start))
    return best


def bench_data(args: argparse.Namespace) -> None:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from autoencoders.data import MNISTDataModule

    start = time.perf_counter()
    dm = MNISTDataModule(batch_size=args.batch_size, val_size=5000)
    dm.prepare_data()
    dm.setup("fit")
    decode = time.perf_counter() - start
    ours = images_per_second(dm.train_dataloader())
    tv = datasets.MNIST(str(dm.root), train=True, transform=transforms.ToTensor())
    rows = [("in-memory tensors, index per batch (this package)", 0, ours)]
    for workers in (0, 2):
        loader = DataLoader(tv, batch_size=args.batch_size, shuffle=True, num_workers=workers)
        rows.append(("torchvision MNIST + ToTensor DataLoader", workers, images_per_second(loader)))
    best_tv = max(r[2] for r in rows[1:])
    table = "\n".join(
        f"| {name} | {workers} | {ips:,.0f} | {ips / best_tv:.1f}x |" for name, workers, ips in rows
    )
    write_section(
        "data",
        header(
            "Data path: MNIST training images per second, in-memory tensors vs torchvision",
            "python -m experiments.bench data",
        )
        + f"\nOne shuffled pass over the training set, batch {args.batch_size}, best of 3 passes; "
        f"speed-up against the faster torchvision loader. Decoding the whole dataset into "
        f"tensors once (`setup`) took {decode:.2f} s.\n\n"
        "| loader | workers | images/s | speed-up |\n|---|---|---|---|\n" + table,
    )


def bench_augment(args: argparse.Namespace) -> None:
    """Milliseconds per batch of 100 MNIST training images for the AAE's policy (shifts of up to
    2 px, rotations of up to 15 degrees, scalings of up to 10 %): ``Augment`` against
    ``kornia.augmentation.RandomAffine`` with the same ranges, when kornia is importable (it is
    not a dependency: ``pip install --target DIR kornia kornia-rs``, then ``PYTHONPATH=DIR``)."""
    from autoencoders.augment import Augment
    from autoencoders.data import MNISTDataModule

    dm = MNISTDataModule(val_size=5000)
    dm.prepare_data()
    dm.setup("fit")
    x = dm.train_set.__getitems__(list(range(100)))[0]
    policies = {"`autoencoders.augment.Augment` (ours)": Augment(2, 15, 0.1)}
    try:
        import kornia.augmentation as K

        policies["`kornia.augmentation.RandomAffine`"] = K.RandomAffine(
            degrees=15, translate=(2 / 28, 2 / 28), scale=(0.9, 1.1), p=1.0
        )
    except ImportError:
        print("kornia is not importable: timing ours alone")
    rows = []
    for name, policy in policies.items():
        times = []
        for _ in range(6):  # the first round warms up
            start = time.perf_counter()
            for _ in range(args.calls):
                out = policy(x)
            times.append((time.perf_counter() - start) / args.calls * 1e3)
        distinct = len({round(float(v.sum()), 4) for v in out})
        rows.append(f"| {name} | {min(times[1:]):.2f} | {distinct} of 100 |")
    command = "python -m experiments.bench " + " ".join(sys.argv[1:])
    write_section(
        "augment",
        header("Augmentation policy: ours against kornia, batch of 100 MNIST images", command)
        + f"\nBest of 5 rounds of {args.calls} calls, after one warm-up round; distinct: "
        "images whose pixel sum differs from every other's (each image its own draw).\n\n"
        "| policy | ms per batch | distinct |\n|---|---|---|\n" + "\n".join(rows),
    )


def validation_curve(log_dir: str, start: float, tag: str | None) -> list[tuple[float, float]]:
    """``(minutes since start, value)`` of every logged ``tag`` in a TensorBoard run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if tag is None:
        return []
    events = EventAccumulator(log_dir).Reload()
    if tag not in events.Tags()["scalars"]:
        return []
    return [((e.wall_time - start) / 60, e.value) for e in events.Scalars(tag)]


def curve_table(curves: list[list[tuple[float, float]]], tag: str) -> str:
    """Mean minutes and mean ± s.e. of ``tag`` at each validation, over runs."""
    lines = [f"| validation | minutes | {tag} |", "|---|---|---|"]
    for i in range(min(len(c) for c in curves)):
        minutes = statistics.mean(c[i][0] for c in curves)
        lines.append(f"| {i + 1} | {minutes:.1f} | {mean_se([c[i][1] for c in curves])} |")
    return "\n".join(lines)


@contextmanager
def logged_apart(trainer, sub_dir: str):
    """Points a TensorBoard-logging trainer at ``<log_dir>/<sub_dir>`` for a while, so that a
    second test pass gets its own TensorBoard run instead of overwriting the first's figures."""
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = trainer.logger
    if not isinstance(logger, TensorBoardLogger):
        yield
        return
    trainer.loggers = [
        TensorBoardLogger(
            logger.save_dir, logger.name, logger.version, sub_dir=sub_dir, default_hp_metric=False
        )
    ]
    try:
        yield
    finally:
        trainer.loggers = [logger]


def claim_version(run_dir: Path) -> int:
    """Creates ``run_dir/version_N`` for the next free N and returns N. ``mkdir`` fails for all
    but one process, so benchmark processes started side by side never share a TensorBoard run
    and its checkpoints (Lightning picks the version only when it first logs)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    numbers = [p.name.removeprefix("version_") for p in run_dir.glob("version_*")]
    taken = [int(n) for n in numbers if n.isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (run_dir / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def bench_fit(args: argparse.Namespace) -> None:
    """Trains and tests every (config, seed); each run is appended to ``runs/bench/NAME.jsonl``
    as soon as it ends, and the section is rewritten from all runs recorded under that name, so
    seeds can run in separate processes (``--seeds 1`` and ``--seeds 2`` side by side)."""
    from experiments.__main__ import main, resolve_args

    name = args.name or "fit-" + "-".join(args.configs)
    command = "python -m experiments.bench " + " ".join(sys.argv[1:])
    for config in args.configs:
        for seed in args.seeds:
            version = claim_version(Path("runs") / resolve_args(["--config", config])[1])
            start_wall, start = time.time(), time.perf_counter()
            cli = main(["fit", "--config", config, f"--seed_everything={seed}",
                        "--trainer.enable_progress_bar=false",
                        f"--trainer.logger.init_args.version={version}", *args.args])  # fmt: skip
            seconds = time.perf_counter() - start
            curve = validation_curve(cli.trainer.logger.log_dir, start_wall, args.curve)
            metrics = cli.trainer.test(ckpt_path=args.ckpt, datamodule=cli.datamodule)[0]
            for override in args.test_also:  # the same checkpoint on another test set
                key, value = override.split("=", 1)
                hparams = {k: v for k, v in cli.datamodule.hparams.items() if k[0] != "_"}
                hparams[key] = yaml.safe_load(value)
                datamodule = type(cli.datamodule)(**hparams)
                with logged_apart(cli.trainer, "test-" + override.replace("=", "-")):
                    extra = cli.trainer.test(ckpt_path=args.ckpt, datamodule=datamodule)[0]
                metrics |= {f"test[{override}]/{k[5:]}": v for k, v in extra.items()}
            metrics["train_minutes"] = seconds / 60
            metrics["s_per_epoch"] = seconds / max(1, cli.trainer.current_epoch)
            batches = cli.trainer.fit_loop.epoch_loop._batches_that_stepped
            metrics["s_per_1k_batches"] = 1000 * seconds / max(1, batches)
            record = {"config": args.label or config, "seed": seed, "ckpt": args.ckpt,
                      "curve_tag": args.curve, "metrics": metrics, "curve": curve,
                      "command": command, "log_dir": cli.trainer.logger.log_dir,
                      "machine": machine(), "title": args.title,
                      **provenance(cli.trainer.logger.log_dir)}  # fmt: skip
            add_record(name, record)


def bench_test(args: argparse.Namespace) -> None:
    """Tests trained checkpoints again (e.g. with a costlier ``iwae_samples``) and records each
    like ``fit`` does; the seed is read from the run's ``config.yaml`` next to ``checkpoints/``."""
    from experiments.__main__ import checkpoint_run, main, resolve_args

    missing = [path for path in args.ckpt_path if not Path(path).is_file()]
    if missing:  # before any run folder is claimed or any checkpoint tested
        sys.exit(f"error: no checkpoint file {', '.join(missing)}")
    command = "python -m experiments.bench " + " ".join(sys.argv[1:])
    for path in args.ckpt_path:
        run_config = Path(path).parent.parent / "config.yaml"
        config = yaml.safe_load(run_config.read_text()) if run_config.is_file() else {}
        seed = config.get("seed_everything", "?")  # "?": a checkpoint outside a run folder
        command_line = ["test", "--config", args.config, f"--ckpt_path={path}"]
        if checkpoint_run(command_line) is None:  # else it tests into its run's test*/ folder
            version = claim_version(Path("runs") / resolve_args(["--config", args.config])[1])
            command_line.append(f"--trainer.logger.init_args.version={version}")
        start = time.perf_counter()
        cli = main([*command_line, "--trainer.enable_progress_bar=false", *args.args])
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        metrics["test_minutes"] = (time.perf_counter() - start) / 60
        record = {"config": args.label or args.config, "seed": seed, "ckpt": path,
                  "curve_tag": None, "metrics": metrics, "curve": [], "command": command,
                  "log_dir": cli.trainer.logger.log_dir, "machine": machine(),
                  "title": args.title, **provenance(cli.trainer.logger.log_dir)}  # fmt: skip
        add_record(args.name, record)


def provenance(log_dir: str) -> dict[str, str | None]:
    """What a record keeps to be reproduced: the code's commit and the run's resolved config."""
    from experiments.__main__ import git_commit

    config, commit = Path(log_dir, "config.yaml"), Path(log_dir, "commit.txt")
    return {
        # commit.txt is written when the run starts; the tree may have moved on since
        "commit": commit.read_text().strip() if commit.is_file() else git_commit(),
        "resolved_config": config.read_text() if config.is_file() else None,
    }


def add_record(name: str, record: dict) -> None:
    """Appends one run to ``runs/bench/NAME.jsonl`` and rewrites the section from all of them."""
    RECORDS.mkdir(parents=True, exist_ok=True)
    with open(RECORDS / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    write_table(name)


def write_table(name: str) -> None:
    """Rewrites the section ``name`` from every run recorded in ``runs/bench/NAME.jsonl``."""
    records = [json.loads(line) for line in (RECORDS / f"{name}.jsonl").read_text().splitlines()]
    configs = list(dict.fromkeys(r["config"] for r in records))
    title = next((r["title"] for r in reversed(records) if r.get("title")), None)
    title = title or section_title(name)  # a title given once (or by hand) stays
    keys = sorted({k for r in records for k in r["metrics"] if k.startswith("test")})
    keys += ["train_minutes", "s_per_epoch", "s_per_1k_batches"]
    lines = ["| config | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    curves = []
    for config in configs:
        runs = [r for r in records if r["config"] == config]
        cells = [mean_se([r["metrics"][k] for r in runs if k in r["metrics"]]) for k in keys]
        seeds = ", ".join(str(r["seed"]) for r in runs)
        lines.append(f"| {config} | {seeds} | " + " | ".join(cells) + " |")
        tag = runs[0]["curve_tag"]
        if tag and all(r["curve"] for r in runs):
            curves.append(
                f"\n\n`{tag}` of {config} against wall-clock minutes since the start of "
                f"training (validation included):\n\n{curve_table([r['curve'] for r in runs], tag)}"
            )
    commands = sorted({r["command"] for r in records})
    machines = list(dict.fromkeys(r["machine"] for r in records if "machine" in r))
    commits = list(dict.fromkeys(r["commit"] for r in records if r.get("commit")))
    checkpoint = CHECKPOINTS.get(records[0]["ckpt"], "checkpoint named in the command")
    if "test_minutes" in keys:
        checkpoint += " (`test_minutes`: wall-clock time of that test)"
    write_section(
        name,
        header(
            title or f"{name}: {', '.join(configs)}",
            "`, `".join(commands),
            machines,
            commits or ["not recorded (runs before 2026-11-30)"],
        )  # fmt: skip
        + f"\nMean ± standard error over seeds (`--seed_everything`); every run is tested with its "
        f"{checkpoint}. Times are wall-clock training time, validation included. `test/mse` is "
        "the mean squared error per pixel; `test/rec`, `test/kl`, `test/nelbo`, `test/nll_iwae` "
        "are nats per image, summed over pixels.\n\n" + "\n".join(lines) + "".join(curves),
    )


def bench_scores(args: argparse.Namespace) -> None:
    """AUROC of several anomaly scores of trained autoencoders (one or more checkpoints of a
    config, e.g. its seeds) on the official validation and test sets, and the test balanced
    accuracy at the threshold Youden's rule fits on validation: which per-image score separates
    pneumonia from normal images. With several checkpoints each cell is mean ± standard error."""
    from autoencoders.callbacks.thresholds import detection_metrics, fit_threshold
    from experiments.__main__ import main

    cli = main(["--config", args.config, "--data.balanced_eval=false", *args.args], run=False)
    cli.datamodule.setup("fit")
    split = {name: getattr(cli.datamodule, f"{name}_set") for name in ("train", "val", "test")}
    images = {k: ds.__getitems__(list(range(len(ds)))) for k, ds in split.items()}
    cells: dict[str, list[list[float]]] = {}
    for path in args.ckpt_path:
        model = type(cli.model).load_from_checkpoint(path, map_location="cpu").eval()
        with torch.no_grad():
            for name, score in anomaly_scores(model, images["train"][0]).items():
                values = {k: score(x, model.reconstruct(x)) for k, (x, _) in images.items()}
                threshold = fit_threshold(values["val"], images["val"][1], "youden")
                val = detection_metrics(values["val"], images["val"][1], threshold)
                test = detection_metrics(values["test"], images["test"][1], threshold)
                cells.setdefault(name, []).append(
                    [float(val["auroc"]), float(test["auroc"]), float(test["balanced_acc"])]
                )
    rows = [
        f"| {name} | " + " | ".join(mean_se([c[i] for c in runs]) for i in range(3)) + " |"
        for name, runs in cells.items()
    ]
    shift = []  # how far validation and test images lie from the healthy training images
    for k in ("val", "test"):
        x, y = images[k]
        distance = nearest_distance(x, images["train"][0], 1)
        medians = [distance[y == label].median().item() for label in (0, 1)]
        shift.append(f"| {k} | " + " | ".join(f"{m:.2f}" for m in medians) + " |")
    command = "python -m experiments.bench " + " ".join(sys.argv[1:])
    checkpoints = ", ".join(f"`{path}`" for path in args.ckpt_path)
    write_section(
        f"scores-{Path(args.config).stem}",
        header(f"Anomaly scores of {Path(args.config).stem}", command)
        + f"\nCheckpoints {checkpoints}; AUROC on the official validation and test sets "
        "(normal = 0, pneumonia = 1), and test balanced accuracy at the threshold Youden's rule "
        "fits on validation (mean ± standard error over the checkpoints). Mahalanobis: "
        "Ledoit-Wolf Gaussian of the healthy training codes. SSIM: Gaussian window, sigma = "
        "window / 7, averaged over the SSIM map.\n\n"
        "| score | val AUROC | test AUROC | test balanced acc |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nMedian Euclidean distance (the model's input pixels) from each image to its "
        "nearest healthy training image:\n\n| split | normal | pneumonia |\n|---|---|---|\n"
        + "\n".join(shift),
    )


def anomaly_scores(model, train: Tensor) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Per-image anomaly scores ``score(images, reconstructions) -> [B]`` of an autoencoder
    trained on the healthy images ``train``, by name."""
    from sklearn.covariance import LedoitWolf
    from torchmetrics.functional.image import structural_similarity_index_measure

    from autoencoders.scores import box_blur

    lungs = torch.zeros(1, 1, 28, 28)
    lungs[..., 4:24, 3:25] = 1

    def ssim(x, r, window=11, blur=0, full_image=False):
        """1 - SSIM per image, or the per-pixel 1 - SSIM map with ``full_image``."""
        if blur:
            x, r = box_blur(x, blur), box_blur(r, blur)
        index, image = structural_similarity_index_measure(
            r, x, data_range=1.0, kernel_size=window, sigma=window / 7,
            reduction="none", return_full_image=True,
        )  # fmt: skip
        return 1 - (image if full_image else index)

    def shifted(x):
        """The 9 copies of ``x`` moved by at most one pixel, edges repeated."""
        (height, width), padded = x.shape[-2:], F.pad(x, (1, 1, 1, 1), mode="replicate")
        return [padded[..., i : i + height, j : j + width] for i in range(3) for j in range(3)]

    codes = LedoitWolf().fit(model.embed(train).numpy())
    healthy = ssim(train, model.reconstruct(train), blur=3, full_image=True)
    mean, std = healthy.mean(0), healthy.std(0) + 1e-6
    return {
        "squared error": lambda x, r: (r - x).square().flatten(1).sum(1),
        "squared error, central 20x22 window": lambda x, r: (
            ((r - x).square() * lungs).flatten(1).sum(1)
        ),
        "squared error after a 5x5 box blur": lambda x, r: (
            (box_blur(r, 5) - box_blur(x, 5)).square().flatten(1).sum(1)
        ),
        "Mahalanobis distance of the code": lambda x, r: torch.from_numpy(
            codes.mahalanobis(model.embed(x).numpy())
        ),
        "distance between the codes of image and reconstruction": lambda x, r: (
            model.embed(x) - model.embed(r)
        ).norm(dim=1),
        "mean distance to the 5 nearest healthy training images (pixels, no model)": (
            lambda x, r: nearest_distance(x, train, 5)
        ),
        **{f"1 - SSIM, window {k}": lambda x, r, k=k: ssim(x, r, k) for k in (3, 7, 11, 15)},
        "1 - SSIM, window 11, after a 3x3 box blur": lambda x, r: ssim(x, r, blur=3),
        "1 - SSIM, window 15, after a 3x3 box blur": lambda x, r: ssim(x, r, 15, blur=3),
        "1 - SSIM, window 11, after a 5x5 box blur": lambda x, r: ssim(x, r, blur=5),
        "1 - SSIM after a 3x3 box blur, averaged over the 9 one-pixel shifts of the input": (
            lambda x, r: torch.stack(
                [ssim(s, model.reconstruct(s), blur=3) for s in shifted(x)]
            ).mean(0)
        ),
        "1 - SSIM map after a 3x3 box blur, each pixel z-scored by the healthy training "
        "images, averaged": lambda x, r: (
            ((ssim(x, r, blur=3, full_image=True) - mean) / std).flatten(1).mean(1)
        ),
        f"the checkpoint's own anomaly_score ({model.scorer})": lambda x, r: model.anomaly_score(x),
    }


def nearest_distance(x: Tensor, train: Tensor, k: int) -> Tensor:
    """Mean Euclidean distance from each image to its ``k`` nearest images of ``train``."""
    distances = torch.cdist(x.flatten(1), train.flatten(1))
    return distances.topk(k, dim=1, largest=False).values.mean(1)


# The README's figures: (file, config, stage, TensorBoard tag, checkpoint glob, extra CLI
# arguments, caption). Each (config, stage) runs once, through the CLI, into a scratch log dir;
# the PNG is the image the config's callbacks logged there.
FIGURES = [
    ("aae_samples_by_class.png", "aae", "validate", "val/samples_by_class", "last.ckpt", [],
     "`aae` samples: one row per label code, each column a random style"),
    ("aae_reconstructions.png", "aae", "validate", "val/reconstructions", "last.ckpt", [],
     "`aae` reconstructions: validation digits above their reconstructions"),
    ("aae_confusion_matrix.png", "aae", "test", "test/confusion_matrix", "last.ckpt", [],
     "`aae` test confusion matrix, 100 labels"),
    ("clusters.png", "aae_unsupervised", "test", "test/cluster_examples", "last.ckpt", [],
     "`aae_unsupervised`: each of the 30 clusters' 10 most confident test images, no labels"),
    ("vae_prior_samples.png", "vae", "test", "test/prior_samples", "best*.ckpt",
     ["--trainer.limit_test_batches=2", "--trainer.callbacks.init_args.iwae_samples=0"],
     "`vae` samples from the prior (Bernoulli means)"),
    ("gmvae_prior_samples.png", "gmvae", "test", "test/prior_samples", "best*.ckpt",
     ["--trainer.limit_test_batches=2", "--trainer.callbacks.init_args.iwae_samples=0"],
     "`gmvae` samples from the mixture prior (Bernoulli means)"),
    ("latent_maps.png", "ae2d_fashion", "test", "test/latent_maps", "best*.ckpt", [],
     "Fashion-MNIST test images in the 2-D code of `ae2d_fashion`, beside PCA and t-SNE"),
    ("anomaly_scores.png", "anomaly_pneumonia", "test", "test/scores", "best*.ckpt", [],
     "`anomaly_pneumonia` test scores by class with the validation threshold, and the ROC"),
    ("anomaly_worst_errors.png", "anomaly_pneumonia", "test", "test/worst_errors", "best*.ckpt",
     [], "`anomaly_pneumonia`: worst false positives and negatives above their reconstructions"),
]  # fmt: skip
MAX_FIGURE_BYTES = 150_000


def run_facts(checkpoint: Path) -> tuple[str, str]:
    """The seed (from the run's ``config.yaml``) and the commit that trained a checkpoint: the
    run's ``commit.txt``, or its bench record's commit, or for runs older than both the newest
    commit before training began (when the run's ``config.yaml`` was written)."""
    import subprocess

    run = checkpoint.parent.parent
    config_file = run / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    seed = str(config.get("seed_everything", "?"))
    if (run / "commit.txt").is_file():
        return seed, (run / "commit.txt").read_text().strip()
    for records in RECORDS.glob("*.jsonl"):  # a bench record of the run that kept its commit
        for line in records.read_text().splitlines():
            record = json.loads(line)
            if record.get("commit") and Path(record.get("log_dir", "")) == run:
                return seed, f"{record['commit']} (bench record `{records.stem}`)"
    started = (config_file if config_file.is_file() else checkpoint).stat().st_mtime
    log = subprocess.run(
        ["git", "log", "-1", "--format=%h", f"--before={started:.0f}"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return seed, f"{log or '?'} (the newest commit when training began; no commit.txt)"


def seed_zero_checkpoint(config: str, pattern: str) -> str | None:
    """The newest ``runs/<config>/version_*/checkpoints/<pattern>`` of a run with seed 0 (the
    figures show the first seed, not the best one), else of any run."""
    from autoencoders.models.classifier import newest_match

    newest = newest_match(f"runs/{config}/version_*/checkpoints/{pattern}")
    runs = sorted(Path("runs", config).glob("version_*/config.yaml"), key=os.path.getmtime)
    for run in reversed(runs):
        if yaml.safe_load(run.read_text()).get("seed_everything") == 0:
            return newest_match(str(run.parent / "checkpoints" / pattern)) or newest
    return newest


def small_png(png: bytes, limit: int = MAX_FIGURE_BYTES, min_width: int = 600) -> bytes:
    """``png`` for a README: grids of 28-pixel images narrower than ``min_width`` enlarged by a
    whole factor (pixels kept sharp); then, when over ``limit`` bytes, a 256-colour palette
    image, shrunk by a quarter at a time until it fits."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    factor = -(-min_width // image.width)  # ceil: at least min_width wide
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
        png = out.getvalue()
    while len(png) > limit:
        out = io.BytesIO()
        image.quantize(256).save(out, format="PNG", optimize=True)
        png = out.getvalue()
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
    return png


def bench_figures(args: argparse.Namespace) -> None:
    """Draws the README's figures from trained runs' checkpoints into ``--out`` (default
    ``docs/figures``), with ``captions.md``: what each shows and which run, seed and commit."""
    import tempfile

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from experiments.__main__ import main

    chosen = dict(item.split("=", 1) for item in args.ckpt)
    wanted = [f for f in FIGURES if not args.only or f[1] in args.only]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, done = [], {}
    for file, config, stage, tag, pattern, extra, caption in wanted:
        checkpoint = chosen.get(config) or seed_zero_checkpoint(config, pattern)
        if checkpoint is None:
            sys.exit(f"error: no checkpoint of {config} (train it, or pass --ckpt {config}=PATH)")
        if (config, stage) not in done:
            scratch = tempfile.mkdtemp(prefix="figures-")
            cli = main([stage, "--config", config, f"--ckpt_path={checkpoint}", *extra,
                        f"--trainer.logger.init_args.save_dir={scratch}",
                        "--trainer.logger.init_args.sub_dir=null",
                        "--trainer.enable_progress_bar=false", *args.args])  # fmt: skip
            events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0}).Reload()
            done[config, stage] = events
        images = done[config, stage].Images(tag)
        (out / file).write_bytes(small_png(images[-1].encoded_image_string))
        seed, commit = run_facts(Path(checkpoint))
        rows.append(f"| [{file}]({file}) | {caption} | `{checkpoint}` | {seed} | {commit} |")
        print(f"{out / file}: {(out / file).stat().st_size / 1e3:.0f} KB")
    captions = out / "captions.md"
    kept = {}  # with --only, the other figures' rows stay as they were
    if captions.is_file():
        for line in captions.read_text().splitlines():
            if line.startswith("| ["):
                kept[line[3 : line.index("]")]] = line
    kept.update((row[3 : row.index("]")], row) for row in rows)
    order = [f[0] for f in FIGURES]
    captions.write_text(
        "# Figures\n\nDrawn by `python -m experiments.bench " + " ".join(sys.argv[1:]) + f"` on "
        f"{date.today()} (and, with `--only`, earlier runs) from the checkpoints named here (the "
        "README shows them).\n\n"
        "| figure | what | checkpoint | seed | trained at commit |\n|---|---|---|---|---|\n"
        + "\n".join(kept[name] for name in order if name in kept)
        + "\n"
    )


def bench_photos(args: argparse.Namespace) -> None:
    """Reads the photo set of ``experiments/photos.py`` (digits drawn stroke by stroke and from
    fonts, photographed; no MNIST) with trained checkpoints, preparing each photo as ``predict``
    does (``mnist_like``): accuracy overall, per source and per digit, and the confusion matrix
    summed over the checkpoints."""
    from PIL import Image

    from autoencoders.data.images import mnist_like
    from experiments.__main__ import main
    from experiments.photos import make_photos

    folder = Path(args.out or f"runs/photos/seed{args.seed}")
    made = make_photos(folder, args.per_digit, args.seed)
    x = torch.stack([mnist_like(Image.open(path)) for path, _ in made])
    y = torch.tensor([digit for _, digit in made])
    font = torch.tensor(["_font" in path.name for path, _ in made])
    cli = main(["--config", args.config], run=False)
    rows, confusion = [], torch.zeros(10, 10, dtype=torch.long)
    for path in args.ckpt_path:
        model = type(cli.model).load_from_checkpoint(path, map_location="cpu").eval()
        with torch.no_grad():
            predicted = model.classify(x).argmax(dim=1)
        right = (predicted == y).float()
        confusion += torch.bincount(y * 10 + predicted, minlength=100).view(10, 10)
        per_digit = " | ".join(f"{right[y == d].mean():.2f}" for d in range(10))
        rows.append(f"| `{path}` | {right.mean():.3f} | {right[~font].mean():.3f} | "
                    f"{right[font].mean():.3f} | {per_digit} |")  # fmt: skip
    matrix = "\n".join(f"| {d} | " + " | ".join(map(str, confusion[d].tolist())) + " |"
                       for d in range(10))  # fmt: skip
    command = "python -m experiments.bench " + " ".join(sys.argv[1:])
    write_section(
        f"photos-{Path(args.config).stem}",
        header(f"Digit photos made without MNIST, read by {Path(args.config).stem}", command)
        + f"\n{len(made)} photos ({args.per_digit} per digit, seed {args.seed}; three in four "
        "drawn stroke by stroke with a felt pen's width, one in four from a system font; "
        "`experiments/photos.py`), each prepared as `predict` prepares it. Accuracy per "
        "checkpoint, per source and per digit:\n\n"
        "| checkpoint | all | pen | font | "
        + " | ".join(map(str, range(10)))
        + " |\n"
        + "|---" * 14
        + "|\n"
        + "\n".join(rows)
        + "\n\nConfusion matrix, summed over the checkpoints (rows: the digit drawn; columns: "
        "the digit read):\n\n| | "
        + " | ".join(map(str, range(10)))
        + " |\n"
        + "|---" * 11
        + "|\n"
        + matrix,
    )


def bench_speed(args: argparse.Namespace) -> None:
    """Seconds per 1000 training batches of each family: a raw PyTorch loop over the model's own
    step, a bare ``Trainer.fit`` and the shipped ``fit`` (see ``experiments/speed.py``)."""
    from experiments import speed

    torch.set_num_threads(args.threads)
    extra = {}
    for config in args.configs:
        if config.startswith("classifier"):  # an encoder to fine-tune: any of the right shape
            extra[config] = ["--model.init_args.encoder_checkpoint=null"]
    device = args.device
    rows, found = speed.speed_table(
        args.configs, None, args.warmup, args.steps, args.rounds, extra, device
    )
    peer = None
    if "vae" in args.configs:  # the peer, when pythae is importable (a scratch install)
        times = [
            speed.pythae_seconds(None, args.warmup, args.steps, device) for _ in range(args.rounds)
        ]
        peer = None if times[0] is None else min(times) / args.steps * 1e3
    if peer is not None:
        shipped = found["vae"]["fit, shipped"]
        rows += (f"\n| peer: pythae 0.1.2 `TrainingPipeline`, the `vae` network | | | {peer:.2f}"
                 f" (`vae` shipped: {shipped / peer:.2f}x of it) |")  # fmt: skip
    command = "python -m experiments.bench " + " ".join(sys.argv[1:])
    kind = torch.device(device).type  # the machine line names the GPU
    write_section(
        "speed" if kind == "cpu" else f"speed_{kind}",
        header(
            "Training speed: the shipped fit against a raw PyTorch loop of the same step"
            + ("" if kind == "cpu" else f" ({kind})"),
            command,
        )
        + f"\nOn {device}, {args.threads} CPU thread(s); seconds per 1000 training batches (the "
        f"configs' batch sizes), timed over {args.steps} batches after {args.warmup} warm-up "
        f"batches, best of {args.rounds} rounds with the three ways interleaved. Ratios are to "
        "the raw loop of the same run; the machine's speed varies 2-2.5x from day to day, the "
        "ratios much less.\n\n"
        "| config | raw loop | fit, bare | fit, shipped |\n|---|---|---|---|\n" + rows,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    augment = sub.add_parser("augment", help="the augmentation policy against kornia's")
    augment.add_argument("--calls", type=int, default=200, help="calls per timed round")
    data = sub.add_parser("data", help="data-path throughput")
    data.add_argument("--batch-size", type=int, default=100)
    fit = sub.add_parser("fit", help="train and test configs over seeds")
    fit.add_argument("--configs", nargs="+", required=True)
    fit.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    fit.add_argument(
        "--label",
        help="row name in the table (default: the config); for runs with --args overrides",
    )
    fit.add_argument("--name", help="section name in BENCHMARKS.md")
    fit.add_argument("--title", help="section title: what was varied (default: name and configs)")
    fit.add_argument("--ckpt", choices=sorted(CHECKPOINTS), default="best")
    fit.add_argument("--curve", help="a validation metric to tabulate against time, e.g. val/acc")
    fit.add_argument(
        "--test-also", nargs="*", default=[], metavar="KEY=VALUE",
        help="also test on the data module with this init argument changed, e.g. "
        "balanced_eval=false (columns test[KEY=VALUE]/...)",
    )  # fmt: skip
    fit.add_argument("--args", nargs=argparse.REMAINDER, default=[], help="extra CLI arguments")
    scores = sub.add_parser("scores", help="AUROC of several anomaly scores of a checkpoint")
    scores.add_argument("--config", required=True)
    scores.add_argument("--ckpt-path", nargs="+", required=True, help="one or more")
    scores.add_argument("--args", nargs=argparse.REMAINDER, default=[], help="extra CLI arguments")
    test = sub.add_parser("test", help="test trained checkpoints again and tabulate")
    test.add_argument("--config", required=True)
    test.add_argument("--ckpt-path", nargs="+", required=True, help="one or more")
    test.add_argument("--name", required=True, help="section name in BENCHMARKS.md")
    test.add_argument("--title", help="section title: what was varied (default: name and configs)")
    test.add_argument("--label", help="row name in the table (default: the config)")
    test.add_argument("--args", nargs=argparse.REMAINDER, default=[], help="extra CLI arguments")
    figures = sub.add_parser("figures", help="the README's figures from trained checkpoints")
    figures.add_argument("--out", default="docs/figures")
    figures.add_argument("--only", nargs="*", default=[], help="configs to draw (default: all)")
    figures.add_argument(
        "--ckpt", nargs="*", default=[], metavar="CONFIG=PATH",
        help="checkpoint of a config (default: the newest run's, as FIGURES names)",
    )  # fmt: skip
    figures.add_argument("--args", nargs=argparse.REMAINDER, default=[], help="extra CLI arguments")
    photos = sub.add_parser("photos", help="read a photo set made without MNIST")
    photos.add_argument("--config", default="aae")
    photos.add_argument("--ckpt-path", nargs="+", required=True, help="one or more")
    photos.add_argument("--per-digit", type=int, default=50)
    photos.add_argument("--seed", type=int, default=0)
    photos.add_argument("--out", help="folder for the photos (default runs/photos/seed<S>)")
    speed = sub.add_parser("speed", help="training speed: fit against a raw PyTorch loop")
    speed.add_argument("--configs", nargs="+", default=None, help="default: one per family")
    speed.add_argument("--warmup", type=int, default=20, help="untimed batches first")
    speed.add_argument("--steps", type=int, default=200, help="timed batches")
    speed.add_argument("--rounds", type=int, default=2, help="best of this many")
    speed.add_argument("--threads", type=int, default=1)
    speed.add_argument("--device", default="cpu", help="cpu, or cuda: every way runs there")
    table = sub.add_parser("table", help="rewrite a section from its recorded runs")
    table.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    if args.command == "speed" and args.configs is None:
        from experiments.speed import FAMILIES

        args.configs = FAMILIES
    if args.command == "table":
        write_table(args.name)
    else:
        commands = {
            "augment": bench_augment,
            "data": bench_data,
            "figures": bench_figures,
            "photos": bench_photos,
            "fit": bench_fit,
            "test": bench_test,
            "scores": bench_scores,
            "speed": bench_speed,
        }
        commands[args.command](args)


if __name__ == "__main__":
    main()
