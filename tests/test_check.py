"""`autotune check`: the verdict logic on constructed figures, what changed, bad input, and real
checks of a tuned magika config (still winning, edited into a loser, another machine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotune.check import Change, CheckResult, judge, machine_slug, what_changed
from autotune.cli import app

runner = CliRunner()
FAST = ["--min-time", "0.1", "--min-runs", "5", "--seed", "1"]


@pytest.mark.parametrize(
    ("kind", "recorded", "now", "noise", "verdict"),
    [
        ("winner", 2.0, 2.0, 1.05, "holds"),
        ("winner", 2.0, 1.85, 1.05, "holds"),  # within the least drop called weaker (10 %)
        ("winner", 2.0, 2.6, 1.05, "holds"),  # better than recorded still holds
        ("winner", 2.0, 1.5, 1.05, "weaker"),
        ("winner", 2.0, 1.5, 1.40, "holds"),  # a noisy host: that drop is within its noise
        ("no gain", 2.0, 1.02, 1.05, "lost"),
        ("no gain", 2.0, 0.7, 1.05, "lost"),
        ("winner", 2.0, 0.98, 1.05, "lost"),  # a winner is never below 1
        ("too noisy", 2.0, 1.3, 1.5, "too noisy"),
    ],
)
def test_the_verdict_from_the_figures(
    kind: str, recorded: float, now: float, noise: float, verdict: str
) -> None:
    assert judge(kind, recorded, now, noise) == verdict


def test_with_both_runs_bands_weaker_needs_them_apart() -> None:
    """Recorded 2.0x, now 1.5x: weaker when the two medians' bands do not overlap."""
    assert judge("winner", 2.0, 1.5, 1.05, bands=(0.1, 0.1)) == "weaker"
    assert judge("winner", 2.0, 1.5, 1.05, bands=(0.3, 0.3)) == "holds"
    assert judge("winner", 2.0, 1.85, 1.05, bands=(0.0, 0.0)) == "holds"  # within MIN_DROP


def _result(verdict: str, gain: float, min_gain: float | None = None) -> CheckResult:
    return CheckResult(
        verdict=verdict, objective="throughput", unit="samples/s", reference="defaults",
        recorded_gain=2.0, gain=gain, noise=1.1, recorded={"a": 1.0}, now={"a": 1.0},
        changes=(), seconds=1.0, method="paired blocks", min_gain=min_gain,
    )  # fmt: skip


def test_exit_codes_and_the_min_gain_bar() -> None:
    assert [_result(v, 1.5).exit_code for v in ("holds", "weaker", "lost", "too noisy")] == [
        0, 1, 1, 3,
    ]  # fmt: skip
    assert _result("holds", 1.5, min_gain=1.05).exit_code == 0
    assert _result("holds", 1.03, min_gain=1.05).exit_code == 1
    assert "below --min-gain 1.05" in "\n".join(_result("holds", 1.03, min_gain=1.05).lines())
    data = _result("weaker", 1.2).to_dict()
    assert data["verdict"] == "weaker" and data["exit_code"] == 1 and data["recorded_gain"] == 2


def test_what_changed_names_each_fact() -> None:
    recorded = {"onnxruntime_version": "1.20.0", "cpu_model": "Intel Xeon", "usable_cpus": 8,
                "isa_flags": ["avx2", "avx512f", "amx_tile"], "gpu": None}  # fmt: skip
    now = {"onnxruntime_version": "1.31.1", "cpu_model": "AMD EPYC", "usable_cpus": 8,
           "isa_flags": ["avx2", "avx512f"], "gpu": None}  # fmt: skip
    changes = what_changed(recorded, now)
    assert changes == [
        Change("onnxruntime version", "1.20.0", "1.31.1"),
        Change("CPU", "Intel Xeon", "AMD EPYC"),
        Change("CPU features", "had amx_tile", "has none"),
    ]
    assert what_changed(recorded, recorded) == []
    assert what_changed({}, now) == []  # facts an older autotune did not record are not guessed
    slug = machine_slug(now | {"onnxruntime_version": "1.31.1"})
    assert slug == "amd-epyc-8cpu-ort1.31.1"


def test_bad_files_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "corrupt.json").write_text("{not json")
    (tmp_path / "newer.json").write_text(json.dumps({"schema": "autotune.tuned/v9"}))
    (tmp_path / "partial.json").write_text(json.dumps({"schema": "autotune.tuned/v1"}))
    for name in ("missing.json", "corrupt.json", "newer.json", "partial.json"):
        result = runner.invoke(app, ["check", str(tmp_path / name)])
        assert result.exit_code == 2, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and name in lines[0], lines
        assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def forest_tuned(
    forest: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A random forest tuned for throughput with batch 64 on offer: tree ensembles gain 4-11x
    from batching, so the config wins; tuned on a copy of the model the tests may swap."""
    folder = tmp_path_factory.mktemp("check")
    model = folder / "forest.onnx"
    shutil.copyfile(forest[0], model)
    done = runner.invoke(
        app,
        ["run", str(model), "--inputs", str(forest[1]), "-o", "throughput", "--batch-sizes",
         "1,64", "--trials", "3", "--finalists", "1", "--rounds", "2", "--study", "forest",
         "--out", str(folder / "results"), *FAST],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return folder / "results" / "forest" / "best.json", model


@pytest.fixture(scope="module")
def magika_tuned(magika: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick magika study (no confirmation): a real best.json to edit."""
    out = tmp_path_factory.mktemp("check") / "results"
    done = runner.invoke(
        app,
        ["run", str(magika), "--trials", "2", "--finalists", "0", "--study", "magika",
         "--out", str(out), *FAST],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return out / "magika" / "best.json"


def _edited(best: Path, folder: Path, **sections: dict) -> Path:
    """A copy of ``best`` in ``folder`` with keys of its sections replaced."""
    data = json.loads(best.read_text())
    for section, values in sections.items():
        data[section].update(values)
    path = folder / "best.json"
    path.write_text(json.dumps(data))
    return path


def test_a_winning_config_still_beats_the_defaults_on_another_machine(
    forest_tuned: tuple[Path, Path], tmp_path: Path
) -> None:
    """Recorded on another onnxruntime and CPU (the fingerprint edited): the changes are
    listed, then it is measured anyway. Still better than the defaults; whether the gain is
    within the noise of the recorded one is the machine's to say, not this test's."""
    best, _ = forest_tuned
    recorded = json.loads(best.read_text())
    assert recorded["config"]["batch_size"] == 64, recorded["confirmation"]["verdict"]
    path = _edited(
        best, tmp_path, environment={"onnxruntime_version": "1.19.0", "cpu_model": "Another CPU"}
    )
    result = runner.invoke(app, ["check", str(path), "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == data["exit_code"] == {"holds": 0, "weaker": 1}[data["verdict"]]
    changed = {c["what"]: (c["recorded"], c["now"]) for c in data["changes"]}
    assert changed["onnxruntime version"][0] == "1.19.0"
    assert changed["CPU"][0] == "Another CPU"
    assert data["gain"] > 1 and data["recorded_gain"] == pytest.approx(recorded["speedup"])
    assert data["method"] == "paired blocks"


def test_a_config_edited_into_a_loser_is_lost(magika_tuned: Path, tmp_path: Path) -> None:
    """One thread and no graph optimizations against the defaults' all cores and fusions."""
    slower = {"intra_op_num_threads": 1, "graph_optimization_level": "ORT_DISABLE_ALL"}
    path = _edited(magika_tuned, tmp_path, config={"session_options": slower})
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("LOST: ")
    assert "unchanged since it was tuned" in result.stderr


def test_a_swapped_model_is_refused(
    forest_tuned: tuple[Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    best, model = forest_tuned
    swapped = tmp_path / "forest.onnx"
    shutil.copyfile(tiny_model, swapped)
    path = _edited(best, tmp_path, model={"path": str(swapped)})
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "is not the model" in line and "autotune run" in line
    assert model.is_file()  # the real one is untouched


def test_against_another_tuned_config(
    forest_tuned: tuple[Path, Path], magika_tuned: Path, tmp_path: Path
) -> None:
    best, _ = forest_tuned
    same = runner.invoke(app, ["check", str(best), "--against", str(best), "--json"])
    assert same.exit_code == 0, same.output
    data = json.loads(same.stdout)
    assert data["verdict"] == "holds" and data["method"] == "not measured"
    assert data["reference"] == "best.json's config"
    other = runner.invoke(app, ["check", str(best), "--against", str(magika_tuned)])
    assert other.exit_code == 2 and "tuned on another model" in other.stderr


def test_retune_if_lost_writes_a_new_study_and_keeps_the_old(
    magika_tuned: Path, tmp_path: Path
) -> None:
    slower = {"intra_op_num_threads": 1, "graph_optimization_level": "ORT_DISABLE_ALL"}
    folder = tmp_path / "results" / "deployed"
    folder.mkdir(parents=True)
    path = _edited(magika_tuned, folder, config={"session_options": slower})
    before = path.read_text()
    result = runner.invoke(app, ["check", str(path), "--retune-if-lost", "--trials", "2", "--json"])
    data = json.loads(result.stdout)
    assert data["verdict"] == "lost" and result.exit_code == 1, result.output
    written = Path(data["retuned"].split(" (")[0])
    assert written.is_file() and written.parent.parent == folder.parent
    assert written.parent.name.startswith("magika-") and "cpu-ort" in written.parent.name
    assert path.read_text() == before  # the deployed one is kept as it was
