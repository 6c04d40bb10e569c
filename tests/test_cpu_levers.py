"""The CPU levers: no trial spent on a config the study measured already, quantization recipes
screened for accuracy once before the search, and a guard that judges as the user would."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from typer.testing import CliRunner

from autotune.cli import app

runner = CliRunner()
QUICK = ["--min-time", "0.05", "--min-runs", "5", "--seed", "1", "--finalists", "0"]


def _study(out: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'autotune.db'}")


def test_a_config_measured_once_is_never_measured_again(magika: Path, tmp_path: Path) -> None:
    """A space of two configs and a budget of eight: the sampler re-proposes measured configs;
    each repeat is recorded, not measured and not counted, and the search ends when the space
    is exhausted instead of burning the budget on copies."""
    space = tmp_path / "two.yaml"
    space.write_text(
        "schema: autotune.space/v1\n"
        "description: two configs\n"
        "providers:\n  - name: CPUExecutionProvider\n"
        "params:\n"
        "  enable_mem_pattern:\n    target: session_option\n    type: bool\n"
    )
    result = runner.invoke(
        app,
        ["run", str(magika), "--space", str(space), "--trials", "8", "--out", str(tmp_path),
         "--batch-sizes", "1", "--json", "--quiet", *QUICK],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    name = json.loads(result.stdout)["study"]["name"]
    trials = _study(tmp_path, name).trials
    measured = [t for t in trials if t.user_attrs.get("failure_kind") != "repeat"]
    repeats = [t for t in trials if t.user_attrs.get("failure_kind") == "repeat"]
    assert len(measured) == 3  # the baseline and the two configs, each once
    configs = [json.dumps(t.user_attrs["config"], sort_keys=True) for t in measured]
    assert len(set(configs)) == 3
    assert repeats and all("measurement" not in t.user_attrs for t in repeats)
    numbers = {t.number for t in measured}
    assert all(t.user_attrs["repeat_of"] in numbers for t in repeats)
