"""The options of a run are declared once: the CLI's flags and the API's keywords are one set,
checked with one message."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.errors import UsageError
from autotune.options import RunOptions, flag_name, flag_of, public_options

runner = CliRunner()
DISPLAY_ONLY = {"model", "quiet", "json_output", "debug"}  # not options of the run itself


def _run_command():  # type: ignore[no-untyped-def]
    command = typer.main.get_command(app)
    return command.commands["run"]  # type: ignore[attr-defined]


def test_the_cli_flags_and_the_api_keywords_are_one_set() -> None:
    params = {p.name: p for p in _run_command().params}
    assert set(params) - DISPLAY_ONLY == set(public_options())
    for name in public_options():
        assert flag_name(name) in params[name].opts, name  # the flag errors name is the CLI's
    with pytest.raises(UsageError, match="takes no option min_run; its options: objective"):
        autotune.tune("model.onnx", min_run=3)


HINTS = typing.get_type_hints(RunOptions)
BOUNDED = [name for name in public_options() if flag_of(name).low is not None]


@pytest.mark.parametrize("name", BOUNDED)
def test_a_value_below_its_bound_gets_one_message_from_the_cli_and_the_api(
    name: str, tmp_path: Path
) -> None:
    low = flag_of(name).low
    assert low is not None
    whole = int in typing.get_args(HINTS[name]) or HINTS[name] is int
    value = int(low) - 1 if whole else low - 0.5
    with pytest.raises(UsageError) as api:
        autotune.tune(tmp_path / "model.onnx", **{name: value})
    message = str(api.value)
    assert message.startswith(f"{flag_name(name)} {value:g} is below {low:g} ({name})")
    result = runner.invoke(app, ["run", str(tmp_path / "model.onnx"), flag_name(name), str(value)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {message}\n"  # before anything else: the model is missing


def test_the_api_takes_what_a_python_caller_has() -> None:
    options = RunOptions(
        "m.onnx", objective="latency", out="o", inputs="x.npz", batch_sizes=[1, 4], shapes=["a=1"]
    )  # type: ignore[arg-type]
    assert options.objective == ("latency",) and options.out == Path("o")
    assert options.inputs == Path("x.npz") and options.batch_sizes == "1,4"
    assert options.shapes == ("a=1",) and options.model == Path("m.onnx")
