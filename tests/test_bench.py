import json
import sys
from pathlib import Path

import pytest

from experiments import bench


def test_sections_are_replaced_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    bench.write_section("a", "first a")
    bench.write_section("b", "only b")
    bench.write_section("a", "second a")
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "second a" in text and "first a" not in text and "only b" in text
    assert text.index("second a") < text.index("only b"), "a section keeps its place"


def test_mean_and_standard_error():
    assert bench.mean_se([1.0, 2.0, 3.0]) == "2 ± 0.58"
    assert bench.mean_se([0.5]) == "0.5"
    assert bench.mean_se([]) == "-", "a metric older records lack"


def test_curve_table_averages_runs():
    table = bench.curve_table([[(1.0, 0.5), (2.0, 0.7)], [(3.0, 0.7), (4.0, 0.9)]], "val/acc")
    assert "| 1 | 2.0 | 0.6 ± 0.1 |" in table and "| 2 | 3.0 | 0.8 ± 0.1 |" in table


def test_fit_records_runs_and_tabulates_them(fake_root, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "RECORDS", tmp_path / "records")
    quick = [f"--data.root={fake_root}", "--data.val_size=1000", "--trainer.max_epochs=1",
             "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
             "--trainer.limit_test_batches=1"]  # fmt: skip
    for seed in ("0", "1"):  # two processes' worth of runs under one name
        bench.main(["fit", "--configs", "ae_mnist", "--seeds", seed, "--name", "t",
                    "--curve", "val/loss", "--args", *quick])  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "records/t.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert records[0]["log_dir"] != records[1]["log_dir"], "each run its own TensorBoard run"
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| ae_mnist | 0, 1 |" in text and "±" in text
    assert "`val/loss` of ae_mnist" in text
    bench.main(["fit", "--configs", "ae_mnist", "--seeds", "0", "--name", "t", "--label",
                "ae_mnist_z8", "--args", *quick, "--model.init_args.encoder.init_args.latent_dim=8",
                "--model.init_args.decoder.init_args.latent_dim=8"])  # fmt: skip
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| ae_mnist | 0, 1 |" in text and "| ae_mnist_z8 | 0 |" in text, "a row of its own"


def test_test_records_checkpoints_with_the_seed_of_their_run(fake_root, tmp_path, monkeypatch):
    """``bench test`` re-tests trained checkpoints (e.g. with a costlier IWAE k) into a table."""
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "RECORDS", tmp_path / "records")
    data = [f"--data.root={fake_root}", "--data.val_size=1000"]
    for seed in ("3", "4"):
        bench.main(["fit", "--configs", "ae_mnist", "--seeds", seed, "--name", "t", "--args",
                    *data, "--trainer.max_epochs=1",
                    "--trainer.limit_train_batches=2"])  # fmt: skip
    checkpoints = sorted(
        str(p) for p in Path("runs/ae_mnist").glob("version_*/checkpoints/last.ckpt")
    )
    bench.main(["test", "--config", "ae_mnist", "--ckpt-path", *checkpoints, "--name", "again",
                "--args", *data])  # fmt: skip
    records = [
        json.loads(line) for line in (tmp_path / "records/again.jsonl").read_text().splitlines()
    ]
    assert [r["seed"] for r in records] == [3, 4] and [r["ckpt"] for r in records] == checkpoints
    fitted = [json.loads(line) for line in (tmp_path / "records/t.jsonl").read_text().splitlines()]
    # one epoch: the best checkpoint fit tested is the last one tested again
    for again, fit in zip(records, fitted, strict=True):
        assert again["metrics"]["test/mse"] == pytest.approx(fit["metrics"]["test/mse"])
    assert len({r["log_dir"] for r in records + fitted}) == 4, "each test its own TensorBoard run"
    text = (tmp_path / "BENCHMARKS.md").read_text().split("bench:again")[1]
    assert (
        "| ae_mnist | 3, 4 |" in text and "tested with its checkpoint named in the command" in text
    )


def test_test_names_a_missing_checkpoint_before_testing_any(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RECORDS", tmp_path / "records")
    real = tmp_path / "real.ckpt"
    real.write_bytes(b"")
    with pytest.raises(SystemExit, match="no checkpoint file .*nope.ckpt"):
        bench.main(["test", "--config", "ae_mnist", "--ckpt-path", str(real),
                    str(tmp_path / "nope.ckpt"), "--name", "t"])  # fmt: skip
    assert not (tmp_path / "records").exists() and not Path("runs").exists(), "nothing claimed"


def test_a_rebuilt_table_names_the_machines_its_runs_recorded(tmp_path, monkeypatch):
    """Runs measured on a lent GPU machine, tabulated here: the section says where they ran."""
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "RECORDS", tmp_path)
    run = {"config": "aae", "ckpt": "last", "curve_tag": None, "curve": [], "command": "c"}
    lines = [run | {"seed": s, "metrics": {"test/acc": a}, "machine": "GPU box"}
             for s, a in ((0, 0.9), (1, 0.8))]  # fmt: skip
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    bench.main(["table", "--name", "t"])
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "- machine: GPU box\n" in text and "| aae | 0, 1 | 0.85 ± 0.05 |" in text


def fit_anomaly_pneumonia(fake_root: str, *extra: str) -> None:
    """One short benchmark run of anomaly_pneumonia on the fake data, under the name ``p``."""
    quick = [f"--data.root={fake_root}", "--trainer.max_epochs=1",
             "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false"]  # fmt: skip
    bench.main(["fit", "--configs", "anomaly_pneumonia", "--seeds", "0", "--name", "p", *extra,
                "--args", *quick])  # fmt: skip


def test_fit_also_tests_a_changed_data_module(fake_root, tmp_path, monkeypatch):
    """``--test-also balanced_eval=false`` scores the same checkpoint on the official test set."""
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "RECORDS", tmp_path / "records")
    fit_anomaly_pneumonia(fake_root, "--test-also", "balanced_eval=false")
    record = json.loads((tmp_path / "records/p.jsonl").read_text())
    balanced, official = "test/auroc", "test[balanced_eval=false]/auroc"
    assert 0 <= record["metrics"][balanced] <= 1 and 0 <= record["metrics"][official] <= 1
    assert record["metrics"]["test[balanced_eval=false]/acc"] != record["metrics"]["test/acc"]
    assert official in (tmp_path / "BENCHMARKS.md").read_text()
    apart = Path(record["log_dir"]) / "test-balanced_eval-false"  # its own TensorBoard run
    assert list(apart.glob("events.out.tfevents.*")), "the second test pass logs apart"


def test_scores_tabulates_every_score_over_checkpoints(fake_root, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "RECORDS", tmp_path / "records")
    fit_anomaly_pneumonia(fake_root)
    folder = Path("runs/anomaly_pneumonia/version_0/checkpoints")
    checkpoints = [str(next(folder.glob("best*.ckpt"))), str(folder / "last.ckpt")]
    bench.main(["scores", "--config", "anomaly_pneumonia", "--ckpt-path", *checkpoints,
                "--args", f"--data.root={fake_root}"])  # fmt: skip
    text = (tmp_path / "BENCHMARKS.md").read_text().split("## Anomaly scores of")[1]
    scores, distances = text.split("Median Euclidean distance")
    rows = [r for r in scores.splitlines() if r.startswith("| ") and not r.startswith("| score")]
    assert (
        len(rows) == 16 and "own anomaly_score (ReconstructionScore(kind='ssim', blur=3" in scores
    )
    for row in rows:  # mean ± standard error over the two checkpoints
        cells = [c.split(" ± ") for c in row.strip("| ").split(" | ")[1:]]
        assert len(cells) == 3 and all(len(c) == 2 for c in cells), row
        assert all(0 <= float(c[0]) <= 1 for c in cells), row
    rows = [r for r in distances.splitlines() if r.startswith(("| val", "| test"))]
    assert len(rows) == 2
    assert all(0 < float(c) < 28 for r in rows for c in r.strip("| ").split(" | ")[1:])


def test_claim_version_gives_each_process_its_own_run_directory(tmp_path):
    (tmp_path / "ssvae" / "version_3").mkdir(parents=True)
    (tmp_path / "ssvae" / "x_explore").mkdir()  # named runs do not count
    first = bench.claim_version(tmp_path / "ssvae")
    second = bench.claim_version(tmp_path / "ssvae")  # a second process right after
    assert (first, second) == (4, 5)
    assert (tmp_path / "ssvae" / "version_5").is_dir()


def test_augment_times_our_policy_and_kornia_when_importable(fake_root, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setenv("AUTOENCODERS_DATA", fake_root)
    monkeypatch.setitem(sys.modules, "kornia", None)  # as on a machine without kornia
    bench.main(["augment", "--calls", "2"])
    text = (tmp_path / "BENCHMARKS.md").read_text()
    rows = [r for r in text.splitlines() if r.startswith("| `")]
    assert len(rows) == 1 and "Augment` (ours)" in rows[0] and rows[0].endswith("100 of 100 |")
    assert float(rows[0].split(" | ")[1]) > 0


@pytest.mark.slow
def test_figures_are_drawn_from_checkpoints_small_and_captioned(fake_root, tmp_path):
    from PIL import Image

    from experiments.__main__ import main

    checkpoints = {}
    for config in dict.fromkeys(figure[1] for figure in bench.FIGURES):
        main(["fit", "--config", config, f"--data.root={fake_root}", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
              "--trainer.enable_progress_bar=false"])  # fmt: skip
        checkpoints[config] = f"runs/{config}/version_0/checkpoints/last.ckpt"
    out = tmp_path / "figures"
    chosen = [f"{config}={path}" for config, path in checkpoints.items()]
    bench.main(["figures", "--out", str(out), "--ckpt", *chosen,
                "--args", f"--data.root={fake_root}", "--trainer.limit_val_batches=2",
                "--trainer.limit_test_batches=2"])  # fmt: skip
    captions = (out / "captions.md").read_text()
    for file, config, *_ in bench.FIGURES:
        png = out / file
        assert png.stat().st_size < bench.MAX_FIGURE_BYTES, file
        assert min(Image.open(png).size) >= 28, file
        row = next(line for line in captions.splitlines() if line.startswith(f"| [{file}]"))
        assert f"`{checkpoints[config]}` | 0 |" in row, row
    first = bench.FIGURES[0][1]  # redrawing one config's figures keeps the others' rows
    bench.main(["figures", "--out", str(out), "--only", first, "--ckpt",
                f"{first}={checkpoints[first]}", "--args", f"--data.root={fake_root}",
                "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2"])  # fmt: skip
    rows = [line for line in captions.splitlines() if line.startswith("| [")]
    assert len(rows) == len(bench.FIGURES)
    assert [line for line in (out / "captions.md").read_text().splitlines()
            if line.startswith("| [")] == rows  # fmt: skip


def test_a_large_figure_is_made_small():
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(noise).save(png, format="PNG")
    assert len(png.getvalue()) > bench.MAX_FIGURE_BYTES
    small = bench.small_png(png.getvalue())
    assert len(small) <= bench.MAX_FIGURE_BYTES and Image.open(io.BytesIO(small)).width >= 100


def test_a_section_keeps_its_title_when_rewritten(tmp_path, monkeypatch):
    """``--title`` names what a section varied; a rewrite without one keeps the title."""
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "RECORDS", tmp_path / "records")
    record = {"config": "ae_mnist", "seed": 0, "ckpt": "best", "curve_tag": None, "curve": [],
              "metrics": {"test/mse": 0.5}, "command": "c", "machine": "m"}  # fmt: skip
    bench.add_record("t", record)
    assert "## t: ae_mnist\n" in (tmp_path / "BENCHMARKS.md").read_text()
    bench.add_record("t", record | {"seed": 1, "title": "ae_mnist over two seeds"})
    bench.add_record("t", record | {"seed": 2, "commit": "abc1234"})
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## ae_mnist over two seeds\n" in text and "## t:" not in text
    assert "- commit: abc1234\n" in text and "| ae_mnist | 0, 1, 2 |" in text


def test_photos_reads_a_made_photo_set_with_each_checkpoint(fake_root, tmp_path, monkeypatch):
    from experiments.__main__ import main
    from experiments.photos import make_photos

    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    made = make_photos(tmp_path / "set", per_digit=2, seed=3)
    assert sorted(digit for _, digit in made) == sorted(list(range(10)) * 2)
    assert {path.suffix for path, _ in made} <= {".jpg", ".png"}
    main(["fit", "--config", "aae", f"--data.root={fake_root}", "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    checkpoint = "runs/aae/version_0/checkpoints/last.ckpt"
    bench.main(["photos", "--ckpt-path", checkpoint, checkpoint, "--per-digit", "2",
                "--out", str(tmp_path / "photos")])  # fmt: skip
    text = (tmp_path / "BENCHMARKS.md").read_text()
    rows = [r for r in text.splitlines() if r.startswith(f"| `{checkpoint}` |")]
    assert len(rows) == 2 and rows[0] == rows[1], "the same checkpoint reads the same"
    confusion = [r for r in text.splitlines() if r[:4] in {f"| {d} " for d in range(10)}]
    assert len(confusion) == 10
    assert sum(int(v) for r in confusion for v in r.strip("|").split("|")[1:]) == 2 * 20


def test_speed_times_the_raw_loop_and_both_fits_of_each_config(fake_root, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "BENCHMARKS.md")
    monkeypatch.setenv("AUTOENCODERS_DATA", fake_root)
    monkeypatch.chdir(tmp_path)
    bench.main(["speed", "--configs", "vae", "ssvae", "--warmup", "1", "--steps", "2",
                "--rounds", "1"])  # fmt: skip
    assert not list(tmp_path.glob("runs/*/version_*"))  # the timed fits leave no runs behind
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:speed -->" in text and "\nOn cpu, 1 CPU thread(s);" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["vae", "ssvae"]
    for row in rows:  # seconds per 1000 batches three ways, the fits' ratios to the raw loop
        cells = row.split("|")[2:5]
        raw, bare, shipped = (float(cell.split()[0]) for cell in cells)
        ratios = [float(cell.split("(")[1].split("x")[0]) for cell in cells[1:]]
        assert raw > 0 and bare > 0 and shipped > 0
        assert ratios == [pytest.approx(way / raw, abs=0.01) for way in (bare, shipped)]
