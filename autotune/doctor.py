"""``autotune doctor``: can this machine run the providers a study asks for, and if not, why.

ONNX Runtime lists providers it was built with, not providers that work: onnxruntime-gpu on a
machine without CUDA libraries lists CUDAExecutionProvider, logs a warning and runs on the CPU.
So each provider is probed for real: a child process creates a session on a tiny model with
that provider first and reports which providers the session really uses, the libraries it
loaded and from where, and what ONNX Runtime logged.

The probe is also what ``--space auto`` uses to pick the best provider that works here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.gpu import gpu_devices
from autotune.machine import installed_ort_distributions

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
SPACE_FOR_PROVIDER = {
    "TensorrtExecutionProvider": "tensorrt",
    "CUDAExecutionProvider": "cuda",
    "CPUExecutionProvider": "cpu",
}
PROBE_TIMEOUT_S = 300
CUDA_FIX = "pip install 'ort-autotune[cuda]'  (installs onnxruntime-gpu[cuda,cudnn]: CUDA and cuDNN from PyPI)"


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _loaded_libraries(prefixes: tuple[str, ...]) -> dict[str, str]:
    """Shared libraries of this process whose names start with a prefix, with their paths."""
    found: dict[str, str] = {}
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1] if "/" in line else ""
            name = Path(path).name
            if name.startswith(prefixes) and ".so" in name:
                found.setdefault(name, path)
    except OSError:
        pass
    return found


def _probe_in_child(provider: str) -> dict[str, Any]:
    """Runs in the probe process: stderr (ONNX Runtime's log) goes to a file we read back."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (stderr for the probe's life, read back below)
    os.dup2(log.fileno(), 2)
    result: dict[str, Any] = {"provider": provider}
    try:
        import numpy as np
        import onnxruntime as ort

        if provider in GPU_PROVIDERS and hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception as exc:  # missing pip CUDA packages are reported below
                result["preload_error"] = str(exc)
        providers = (
            [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        )
        session = ort.InferenceSession(_tiny_model(), providers=providers)
        session.run(None, {"x": np.ones((1, 8), np.float32)})
        result["active"] = session.get_providers()
        result["ok"] = provider in result["active"]
    except Exception as exc:
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    result["libraries"] = _loaded_libraries(("libcudart", "libcublas", "libcudnn", "libnvinfer"))
    log.seek(0)
    lines = [
        line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()
    ]
    result["log"] = [line for line in lines if "[E:" in line or "[W:" in line][-4:]
    return result


def probe(provider: str) -> dict[str, Any]:
    """Whether ``provider`` really creates a working session here, from a fresh process."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "autotune.doctor", "--probe", provider],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {
            "provider": provider,
            "ok": False,
            "error": f"probe timed out after {PROBE_TIMEOUT_S} s",
        }
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        reason = f"probe process exited with code {done.returncode}"
        return {"provider": provider, "ok": False, "error": reason}


# ONNX Runtime's log line when a provider library does not load; the cause after "with error:"
# names the missing CUDA/cuDNN library, the rest is source paths that vary by install location.
_LOAD_FAILURE = re.compile(
    r"Failed to load library (?P<library>\S+) with error: (?P<cause>[^\x1b]+)"
)


def reason_of(result: dict[str, Any]) -> str:
    """One line: why a probed provider does not work."""
    if result.get("error"):
        return str(result["error"])
    for line in result.get("log", []):
        failed = _LOAD_FAILURE.search(line)
        if failed:
            library = Path(failed.group("library")).name
            return f"cannot load {library}: {failed.group('cause').strip()}"[:300]
        if "cannot open shared object" in line:
            return line.split("]", 1)[-1].strip()[:300]
    if result.get("log"):
        return result["log"][-1].split("]", 1)[-1].strip()[:300]
    return f"the session runs on {', '.join(result.get('active', []))} instead"


@dataclass
class Diagnosis:
    lines: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    working: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)
    install_ok: bool = True

    def works(self, provider: str) -> bool:
        return provider in self.working


def diagnose(providers: list[str] | None = None) -> Diagnosis:
    """Probe the installation; ``providers`` defaults to every provider the build lists."""
    d = Diagnosis()
    packages = installed_ort_distributions()
    listing = ", ".join(f"{name} {version}" for name, version in packages.items()) or "none"
    d.lines.append(f"packages:   {listing}")
    if len(packages) > 1:
        d.install_ok = False
        d.fixes.append(
            "several onnxruntime packages are installed and overwrite each other's files: "
            "pip uninstall -y " + " ".join(packages) + " && pip install onnxruntime-gpu"
        )
    if not packages:
        d.install_ok = False
        d.fixes.append("no onnxruntime package: pip install onnxruntime-gpu (or onnxruntime)")
        return d
    import onnxruntime as ort

    try:
        from onnxruntime.capi import build_and_package_info as info

        cuda = getattr(info, "cuda_version", None)
    except ImportError:
        cuda = None
    build = f", built for CUDA {cuda}" if cuda else ""
    d.lines.append(f"onnxruntime: {ort.__version__} (device {ort.get_device()}{build})")
    devices = gpu_devices()
    for gpu in devices:
        d.lines.append(
            f"GPU {gpu['index']}:     {gpu['name']}, driver {gpu['driver']}, "
            f"{gpu['memory_total_mb']:.0f} MB ({gpu['memory_used_mb']:.0f} MB in use)"
        )
    if not devices:
        d.lines.append("GPU:        none found (no NVIDIA driver or NVML)")
    listed = list(ort.get_available_providers())
    d.lines.append(f"listed:     {', '.join(listed)}")
    for provider in providers or listed:
        result = probe(provider)
        if result.get("ok"):
            d.working.append(provider)
            libs = result.get("libraries") or {}
            where = (
                f" ({', '.join(f'{k} from {Path(v).parent}' for k, v in libs.items())})"
                if libs
                else ""
            )
            d.lines.append(f"  {provider:<28} works{where}")
            continue
        reason = reason_of(result)
        d.broken[provider] = reason
        d.lines.append(f"  {provider:<28} DOES NOT WORK: {reason}")
        if provider in GPU_PROVIDERS and not devices:
            d.fixes.append(
                f"{provider}: no NVIDIA GPU or driver is visible here; tune with --space cpu"
            )
        elif provider not in listed:
            d.fixes.append(f"{provider}: this onnxruntime build does not include it")
        elif provider in GPU_PROVIDERS and (
            "cannot open shared object" in reason or "Failed to load" in reason
        ):
            d.fixes.append(f"{provider}: CUDA/cuDNN libraries are missing: {CUDA_FIX}")
        elif provider == "TensorrtExecutionProvider":
            d.fixes.append(f"{provider}: TensorRT libraries are missing: pip install tensorrt")
    return d


def best_space() -> tuple[str, Diagnosis]:
    """The search space of the best provider that really works here (TensorRT, CUDA, CPU)."""
    d = diagnose([*GPU_PROVIDERS, "CPUExecutionProvider"])
    for provider in (*GPU_PROVIDERS, "CPUExecutionProvider"):
        if d.works(provider):
            return SPACE_FOR_PROVIDER[provider], d
    return "cpu", d


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--probe":
        print(json.dumps(_probe_in_child(args[1])))
        return 0
    print("usage: python -m autotune.doctor --probe PROVIDER (or: autotune doctor)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
