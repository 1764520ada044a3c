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


def test_curve_table_averages_runs():
    table = bench.curve_table([[(1.0, 0.5), (2.0, 0.7)], [(3.0, 0.7), (4.0, 0.9)]], "val/acc")
    assert "| 1 | 2.0 | 0.6 ± 0.1 |" in table and "| 2 | 3.0 | 0.8 ± 0.1 |" in table
