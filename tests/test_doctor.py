"""doctor and provider checks against the real onnxruntime-gpu of this machine (no GPU here)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from autotune.cli import app
from autotune.doctor import diagnose, probe, reason_of

runner = CliRunner()


def _cuda_libraries_present() -> bool:
    try:
        ctypes.CDLL("libcublasLt.so.13")
    except OSError:
        return False
    return True


needs_gpu_build_without_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers() or _cuda_libraries_present(),
    reason="needs onnxruntime-gpu on a machine without CUDA libraries (the CI machine)",
)


def test_cpu_provider_probe_works() -> None:
    result = probe("CPUExecutionProvider")
    assert result["ok"] and result["active"] == ["CPUExecutionProvider"]


@needs_gpu_build_without_cuda
def test_listed_cuda_provider_that_falls_back_is_reported_with_its_reason() -> None:
    result = probe("CUDAExecutionProvider")
    assert not result["ok"] and result["active"] == ["CPUExecutionProvider"]
    d = diagnose(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert d.works("CPUExecutionProvider") and not d.works("CUDAExecutionProvider")
    reason = d.broken["CUDAExecutionProvider"]
    # The missing library is named whatever the install path, without ORT's source-path noise.
    assert reason.startswith("cannot load libonnxruntime_providers_cuda.so: lib"), reason
    assert "shared object" in reason and "onnxruntime_src" not in reason, reason
    assert any("onnxruntime-gpu" in line for line in d.lines)


def test_load_failure_reason_names_the_missing_library_even_under_a_long_install_path() -> None:
    deep = (
        "/check/" + "very-long-folder/" * 30 + "onnxruntime/capi/libonnxruntime_providers_cuda.so"
    )
    line = (
        "\x1b[1;31m2026-11-21 23:06:07.5 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 "
        "operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 "
        "onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : "
        f"FAIL : Failed to load library {deep} with error: libcudnn.so.9: cannot open shared "
        "object file: No such file or directory\x1b[m"
    )
    reason = reason_of({"ok": False, "active": ["CPUExecutionProvider"], "log": [line]})
    assert reason == (
        "cannot load libonnxruntime_providers_cuda.so: libcudnn.so.9: "
        "cannot open shared object file: No such file or directory"
    )


@needs_gpu_build_without_cuda
def test_doctor_command_exit_code_follows_the_requested_provider() -> None:
    bad = runner.invoke(app, ["doctor", "--provider", "CUDAExecutionProvider"])
    assert bad.exit_code == 1
    assert "CUDAExecutionProvider" in bad.stdout and "DOES NOT WORK" in bad.stdout
    assert "to fix:" in bad.stdout
    good = runner.invoke(app, ["doctor", "--provider", "CPUExecutionProvider"])
    assert good.exit_code == 0, good.stdout
    assert "packages:" in good.stdout and "CPUExecutionProvider" in good.stdout


@needs_gpu_build_without_cuda
def test_cuda_space_is_refused_before_any_trial(magika: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(magika), "--space", "cuda", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "CUDAExecutionProvider is listed by onnxruntime but does not work here" in result.stderr
    assert "autotune doctor" in result.stderr and not out.exists()


def test_space_auto_picks_a_provider_that_works(tiny_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", str(tiny_model), "--space", "auto", "-o", "latency", "--trials", "2",
         "--out", str(tmp_path), "--min-time", "0.05", "--finalists", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = "cpu" if not _cuda_libraries_present() else ""
    assert f"-{expected}" in next(tmp_path.glob("*/best.json")).parent.name
