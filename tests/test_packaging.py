"""The installed package, not the source tree: a non-editable install finds its search spaces.

The built-in spaces live in the repository's top-level ``search_spaces/`` and ship in the wheel
as the package ``autotune.search_spaces``. This builds and installs the project into a throwaway
folder (offline, with this environment's setuptools) and uses it from a fresh interpreter that
cannot see the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools

# setuptools >= 70.1 (bdist_wheel built in, so the wheel builds offline) is in the test extra:
# an older one fails here rather than skipping the packaging check.
assert tuple(int(x) for x in setuptools.__version__.split(".")[:2]) >= (70, 1), (
    f"setuptools {setuptools.__version__} is too old: pip install -e '.[test]'"
)

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, importlib.metadata as md
import autotune, autotune.search_spaces
from autotune.space import SPACES_DIR, load_space, space_names
space = load_space("cpu")
dist = md.distribution("ort-autotune")
print(json.dumps({
    "autotune_file": autotune.__file__,
    "spaces_dir": str(SPACES_DIR),
    "names": space_names(),
    "knobs": [p.name for p in space.params],
    "version": md.version("ort-autotune"),
    "dist_at": str(dist.locate_file("")),
    "files": [str(f) for f in dist.files or ()],
    "scripts": {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"},
}))
"""


def test_a_non_editable_install_ships_and_finds_the_search_spaces(tmp_path: Path) -> None:
    # Build from a copy, so a stale build/ or egg-info in the checkout cannot leak into it.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("autotune", "search_spaces"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    install += ["--no-build-isolation", "--no-index", "--target", str(site), str(src)]
    built = subprocess.run(install, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (site / "autotune" / "search_spaces" / "cpu.yaml").is_file()
    packages = {p.parent.relative_to(ROOT) for p in (ROOT / "autotune").rglob("__init__.py")}
    missing = [str(p) for p in packages if not (site / p / "__init__.py").is_file()]
    assert not missing, f"packages left out of the wheel (pyproject's packages): {missing}"

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)

    assert Path(found["autotune_file"]).is_relative_to(site)  # not the checkout's autotune/
    assert Path(found["spaces_dir"]) == site / "autotune" / "search_spaces"
    assert {"cpu", "cuda", "tensorrt"} <= set(found["names"])
    assert "intra_op_num_threads" in found["knobs"]
    assert Path(found["dist_at"]).resolve() == site.resolve()
    assert found["version"]
    assert "autotune/search_spaces/cpu.yaml" in found["files"]
    assert found["scripts"] == {"autotune": "autotune.cli:main"}
