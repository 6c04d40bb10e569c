"""A real model whose weights live in a separate file (``save_as_external_data``), end to end.

RapidOCR's orientation classifier, re-saved with its initializers in ``weights.bin`` beside the
graph, as exports of large models are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.errors import AutotuneError, UsageError
from autotune.model import read_model

runner = CliRunner()
FAST = ["--min-time", "0.05", "--min-runs", "5", "--finalists", "1", "--rounds", "2"]


def _save_external(model: onnx.ModelProto, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location="weights.bin", size_threshold=256,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def external(rapid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _save_external(onnx.load(str(rapid)), tmp_path_factory.mktemp("external"))
    assert (path.parent / "weights.bin").stat().st_size > 10 * path.stat().st_size
    return path


@pytest.fixture(scope="module")
def zeroed(external: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same graph file, byte for byte, with every weight zeroed."""
    folder = tmp_path_factory.mktemp("zeroed")
    (folder / "model.onnx").write_bytes(external.read_bytes())
    size = (external.parent / "weights.bin").stat().st_size
    (folder / "weights.bin").write_bytes(bytes(size))
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def tuned(external: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("results")
    result = runner.invoke(
        app,
        ["run", str(external), "-o", "latency", "--trials", "3", "--out", str(out), "--seed", "1",
         *FAST, "--json", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    return out, Path(payload["path"]), payload["study"]["name"]


def test_the_identity_covers_the_weights_file(external: Path, zeroed: Path) -> None:
    real, copy = read_model(external), read_model(zeroed)
    assert real.external == (str(external.parent / "weights.bin"),)
    assert real.sha256 != copy.sha256, "a copy with other weights is another model"
    assert real.size_bytes > external.stat().st_size  # the weights count in its size
    lonely = zeroed.parent.parent / "lonely"
    lonely.mkdir()
    (lonely / "model.onnx").write_bytes(external.read_bytes())
    with pytest.raises(UsageError, match="keeps weights in weights.bin, which is not beside it"):
        read_model(lonely / "model.onnx")


def test_a_copy_with_other_weights_does_not_resume_the_study(
    tuned: tuple[Path, Path, str], zeroed: Path
) -> None:
    out, _, name = tuned
    again = runner.invoke(
        app, ["run", str(zeroed), "-o", "latency", "--trials", "3", "--out", str(out),
              "--study", name, *FAST],
    )  # fmt: skip
    assert again.exit_code == 2, again.output
    assert "was made for another model" in again.stderr
    assert "Traceback" not in again.stderr


def test_load_session_refuses_a_model_with_other_weights(
    tuned: tuple[Path, Path, str], external: Path, zeroed: Path, tmp_path: Path
) -> None:
    _, best, _ = tuned
    feeds = {"x": np.zeros((1, 3, 224, 224), np.float32)}
    assert autotune.load_session(best).run(None, feeds)[0].shape[0] == 1
    with pytest.raises(AutotuneError, match="is not the model .* verify=False"):
        autotune.load_session(best, model_path=zeroed)
    assert autotune.load_session(best, model_path=zeroed, verify=False).run(None, feeds)
    moved = tmp_path / "deploy"  # the same model, graph and weights, elsewhere: fine
    moved.mkdir()
    for name in ("model.onnx", "weights.bin"):
        (moved / name).write_bytes((external.parent / name).read_bytes())
    assert autotune.load_pool(best, model_path=moved / "model.onnx").sessions


def _loads(path: Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    code = (
        "import numpy, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n"
        "print(s.run(None, {'x': numpy.zeros((1, 3, 224, 224), 'float32')})[0].shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_exports_keep_the_weights_external(
    tuned: tuple[Path, Path, str], external: Path, tmp_path: Path
) -> None:
    out, _, name = tuned
    graph_size = external.stat().st_size
    config_dest = tmp_path / "ortconfig" / "model.ort-config.onnx"
    done = runner.invoke(
        app, ["export", "--out", str(out), "--study", name, "-f", "ort-config",
              "--dest", str(config_dest)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert config_dest.stat().st_size < 2 * graph_size  # the graph, not the weights inlined
    assert (config_dest.parent / "weights.bin").is_file()
    assert _loads(config_dest, tmp_path) == "(1, 4)"

    optimized_dest = tmp_path / "optimized" / "model.optimized.onnx"
    done = runner.invoke(
        app, ["export", "--out", str(out), "--study", name, "-f", "optimized-model",
              "--dest", str(optimized_dest)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    weights = optimized_dest.parent / "model.optimized.onnx.data"
    assert weights.is_file() and weights.stat().st_size > optimized_dest.stat().st_size
    assert _loads(optimized_dest, tmp_path) == "(1, 4)"
    config = json.loads(optimized_dest.with_suffix(".json").read_text())
    assert autotune.load_session(optimized_dest.with_suffix(".json"))  # its identity holds
    assert config["model"]["sha256"] == read_model(optimized_dest).sha256
