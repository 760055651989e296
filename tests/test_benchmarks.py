"""The benchmark scripts still run and print their tables (their figures are for docs/benchmarks.md, not tests)."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # subprocess runs of the whole CLI: the full tier


def run_script(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_throughput_compares_the_four_paths():
    out = run_script("benchmarks/throughput.py", "--workloads", "mnist_mlp", "--rounds", "1", "--paths", "abcd")
    header = next(line for line in out.splitlines() if line.startswith("steady-state training samples/s"))
    assert re.search(r"1 torch thread\(s\), .+, \d+ cores, torch \d", header)  # the machine, for the docs
    row = next(line for line in out.splitlines() if line.startswith("| mnist_mlp |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["mnist_mlp", "synthetic", "128"]
    project, plain, template, bare, *ratios = (float(cell.replace(",", "")) for cell in cells[3:])
    assert min(project, plain, template, bare) > 0
    expected = [project / plain, project / template, bare / plain]
    assert ratios == pytest.approx(expected, abs=0.011)  # one round: no median


def test_startup_separates_imports_from_the_rest():
    out = run_script("benchmarks/startup.py", "--runs", "1")
    total = float(re.search(r"first training step: (\S+) s \(median of 1; .+, \d+ cores\)", out).group(1))
    imports = float(re.search(r"imports\s*: (\S+) s", out).group(1))
    rest = float(re.search(r"everything else\s*: (\S+) s", out).group(1))
    assert 0 < rest < total and abs(total - imports - rest) < 0.02


def test_hook_overhead_counts_and_times_both_versions():
    out = run_script(
        "benchmarks/hook_overhead.py",
        "data=mnist",
        "model=mlp",
        "model.width=8",
        "model.depth=1",
        "data.batch_size=16",
        "trainer.limit_train_batches=40",
    )
    contexts, keys = (
        int(n) for n in re.search(r"per step[^:]*: (\d+) profiler contexts, (\d+) checkpoint", out).groups()
    )
    assert contexts > 20 and keys >= 10  # two checkpoint callbacks, five hooks a step each, and the epoch's end
    assert len(re.findall(r"Lightning's +[\d.]+ us +the project's +[\d.]+ us a call", out)) == 3
    assert re.search(r"\(20 new, 19 old steps\): the project's [\d.]+ ms, with Lightning's defaults [\d.]+ ms", out)


def test_results_runs_each_recipe_over_seeds_and_writes_the_table(tmp_path):
    from tests import fixtures

    fixtures.write_mnist(tmp_path / "data")
    fixtures.write_imdb(tmp_path / "data")
    out = tmp_path / "results.md"
    recipes = ["digits_cnn", "imdb_mlp", "mnist_mlp"]
    run_script(
        *("benchmarks/results.py", "--quick", "--seeds", "0", "1", "--recipes", *recipes, "--out", str(out)),
        *("--runs", str(tmp_path / "runs")),
        f"paths.data_dir={tmp_path / 'data'}",  # the fixtures' files: nothing to download
    )
    table = out.read_text()
    assert re.search(r"Last updated by `python benchmarks/results.py --quick .+`", table)
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == [f"`{r}`" for r in recipes]
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    for row in rows:
        accuracy, n, _, measured_on = (cell.strip() for cell in row.split("|")[2:6])
        assert re.fullmatch(r"\d+\.\d\d % ± \d+\.\d\d", accuracy) and n == "2/2"
        assert re.fullmatch(rf".+, \d+ cores, {today}", measured_on)
    assert "98.61 %: a plain PyTorch loop" in rows[2]  # the reference beside the figure
    assert rows[2].endswith("`logger=none` `trainer.max_epochs=1` |")  # what was run, beyond recipe and seed
    # The sweeps are kept: the table can be rebuilt from them without training again.
    sweeps = sorted((tmp_path / "runs").glob("*/*"))
    assert [s.name for s in sweeps] == recipes
    # One recipe's seeds may come from separate folders (here each job of the first sweep on its own): merged.
    apart = [*sorted(sweeps[0].glob("[0-9]")), *sweeps[1:]]
    again = tmp_path / "again.md"
    run_script("benchmarks/results.py", "--from-runs", *map(str, apart), "--out", str(again))
    rebuilt = [line for line in again.read_text().splitlines() if line.startswith("| `")]
    assert sorted(row for row in rebuilt if "not measured" not in row) == sorted(rows)
    # Every recipe has its row, the ones without runs as not measured, beside their target.
    missing = [row for row in rebuilt if "not measured" in row]
    table_recipes = {"breast_cancer_mlp", "diabetes_mlp"}  # benchmarks/tables.py's, against scikit-learn
    assert len(rebuilt) == len({p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")} - table_recipes)
    assert any(row.startswith("| `imdb_rnn` | not measured |") and ">= 90.0 %" in row for row in missing)

    # Measuring one recipe again replaces its row and keeps the others' (here marked to tell them apart).
    def mark(table: str, recipe: str, cells: str) -> str:  # a row of these cells, the real one commented out
        return table.replace(f"| `{recipe}` | ", f"| `{recipe}` | {cells} |\n#")

    marked = mark(again.read_text(), "mnist_mlp", "11.11 % | 1/1 | 1 s | kept | x | y | z")
    again.write_text(mark(marked, "imdb_mlp", "22.22 % | 1/1 | 1 s | stale | x | y | z"))
    run_script("benchmarks/results.py", "--from-runs", str(sweeps[1]), "--out", str(again))
    remeasured = [line for line in again.read_text().splitlines() if line.startswith("| `")]
    kept = next(row for row in remeasured if row.startswith("| `mnist_mlp`"))
    assert kept.startswith("| `mnist_mlp` | 11.11 % | 1/1 | 1 s | kept | >= 98.70 % | 98.61 %")
    assert kept.endswith("| z |")  # target and reference from the script, the rest as it was
    assert [row for row in remeasured if row.startswith("| `imdb_mlp`")] == [rows[1]]
    assert len(remeasured) == len(rebuilt) and "stale" not in again.read_text()


def test_results_quick_writes_its_table_beside_its_sweeps_not_over_the_measured_one(tmp_path):
    measured = (REPO / "docs" / "results.md").read_text()
    run_script("benchmarks/results.py", "--quick", "--seeds", "0", "--recipes", "digits_cnn", "--runs", str(tmp_path))
    (table,) = tmp_path.glob("*/results.md")
    rows = [line for line in table.read_text().splitlines() if line.startswith("| `")]
    assert len(rows) == 1 and rows[0].startswith("| `digits_cnn` |")  # what it ran, nothing kept
    assert (REPO / "docs" / "results.md").read_text() == measured


def test_loggers_times_each_tracker_against_the_first():
    out = run_script("benchmarks/loggers.py", "trainer.max_epochs=1", "--rounds", "1", "--workloads", "default")
    assert re.search(r"cores; 1 rounds, loggers alternating; extra overrides: trainer.max_epochs=1", out)
    rows = [line for line in out.splitlines() if line.startswith("default ")]
    assert [row.split()[1] for row in rows] == ["logger=tensorboard", "logger=mlflow"]
    assert "(1.00 of tensorboard)" in rows[0] and re.search(r"\(\d\.\d\d of tensorboard\)  +\d+\.\d s a run", rows[1])


def test_tables_holds_each_table_recipe_against_scikit_learn(tmp_path):
    out = run_script(
        "benchmarks/tables.py", "--seeds", "0", "--overrides", "trainer.max_epochs=2", f"paths.data_dir={tmp_path}"
    )
    for recipe, metrics, baselines in (
        ("breast_cancer_mlp", "acc", ("LogisticRegression", "HistGradientBoosting")),
        ("diabetes_mlp", "rmse | r2", ("Ridge", "HistGradientBoosting")),
    ):
        assert f"| {recipe} | {metrics} |" in out
        section = out[out.index(f"| {recipe} |") :]
        models = [line.split("|")[1].strip() for line in section.splitlines()[2:7]]
        assert models == [
            "MLP recipe",
            *(f"{b} (train + val)" for b in baselines),
            *(f"{b} (train)" for b in baselines),
        ]
