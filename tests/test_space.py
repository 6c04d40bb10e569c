from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from optuna.trial import FixedTrial

from autotune.errors import UsageError
from autotune.space import default_batch_sizes, load_space, parse_batch_sizes, space_names


def test_builtin_cpu_space_loads_and_resolves_machine_bounds() -> None:
    space = load_space("cpu").resolve(batch_sizes=(1, 2, 4), cpus=3)
    params = {p.name: p for p in space.params}
    assert params["intra_op_num_threads"].high == 3
    assert params["inter_op_num_threads"].when == {"execution_mode": "ORT_PARALLEL"}
    assert params["batch_size"].choices == (1, 2, 4)
    assert "ORT_ENABLE_ALL" in params["graph_optimization_level"].choices
    assert "cpu" in space_names()


def test_a_single_batch_size_is_not_a_search_dimension() -> None:
    space = load_space("cpu").resolve(batch_sizes=(4,), cpus=2)
    assert "batch_size" not in {p.name for p in space.params}
    assert space.baseline().batch_size == 4


def test_suggest_maps_knobs_to_their_targets_and_honours_conditions() -> None:
    space = load_space("cpu").resolve(batch_sizes=(1, 8), cpus=2)
    params = {
        "intra_op_num_threads": 2,
        "execution_mode": "ORT_SEQUENTIAL",
        "inter_op_num_threads": 2,  # must be ignored: only sampled with ORT_PARALLEL
        "graph_optimization_level": "ORT_ENABLE_BASIC",
        "enable_cpu_mem_arena": False,
        "enable_mem_pattern": True,
        "session.intra_op.allow_spinning": "0",
        "session.set_denormal_as_zero": "1",
        "session.dynamic_block_base": "4",
        "session.disable_prepacking": "0",
        "free_dim_overrides": False,
        "batch_size": 8,
    }
    config = space.suggest(FixedTrial(params))
    assert "inter_op_num_threads" not in config.session_options
    assert config.session_options["intra_op_num_threads"] == 2
    assert config.session_options["enable_cpu_mem_arena"] is False
    assert config.config_entries == {
        "session.intra_op.allow_spinning": "0",  # so force_spinning_stop is not sampled
        "session.set_denormal_as_zero": "1",
        "session.dynamic_block_base": "4",
        "session.disable_prepacking": "0",
    }
    assert config.batch_size == 8
    parallel = space.suggest(FixedTrial({**params, "execution_mode": "ORT_PARALLEL"}))
    assert parallel.session_options["inter_op_num_threads"] == 2


def test_baseline_sets_nothing() -> None:
    baseline = load_space("cpu").resolve(batch_sizes=(1,), cpus=2).baseline()
    assert baseline.session_options == {} and baseline.config_entries == {}
    assert [p.name for p in baseline.providers] == ["CPUExecutionProvider"]


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "schema": "autotune.space/v1",
            "providers": [{"name": "CPUExecutionProvider"}],
            "colour": "blue",
            "params": {
                "intra_op_num_threads": {
                    "target": "session_option",
                    "type": "int",
                    "low": 4,
                    "high": 2,
                },
                "execution_mode": {
                    "target": "session_option",
                    "type": "categorical",
                    "choices": ["FAST"],
                },
                "enable_mem_pattern": {
                    "target": "session_option",
                    "type": "int",
                    "low": 0,
                    "high": 1,
                },
                "inter_op_num_threads": {
                    "target": "session_option",
                    "type": "int",
                    "low": 1,
                    "high": "all_cpus",
                    "when": {"mode": "ORT_PARALLEL"},
                },
                "typo_knob": {"target": "session_option", "typ": "bool"},
            },
        },
    )
    with pytest.raises(UsageError) as info:
        load_space(str(path))
    message = str(info.value)
    assert str(path) in message
    for expected in [
        "unknown key 'colour'",
        "empty range, low 4 > high 2",
        "['FAST'] not in",
        "enable_mem_pattern takes a bool",
        "'all_cpus'",
        "'mode' is not a knob defined before",
        "unknown key 'typ'",
        "typo_knob: not a SessionOptions attribute",
    ]:
        assert expected in message, expected


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "params: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_space(str(path))


def test_unknown_space_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown search space 'gpu-turbo'.*cpu"):
        load_space("gpu-turbo")


def test_range_empty_on_this_machine_is_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "schema": "autotune.space/v1",
            "providers": [{"name": "CPUExecutionProvider"}],
            "params": {
                "intra_op_num_threads": {
                    "target": "session_option",
                    "type": "int",
                    "low": 4,
                    "high": "usable_cpus",
                }
            },
        },
    )
    with pytest.raises(UsageError, match="empty on this machine"):
        load_space(str(path)).resolve(batch_sizes=(1,), cpus=2)


def test_unavailable_provider_is_a_usage_error() -> None:
    space = load_space("cpu")
    with pytest.raises(UsageError, match="CPUExecutionProvider"):
        space.check_providers(["DmlExecutionProvider"])


@pytest.mark.parametrize(
    ("objective", "dynamic", "pinned", "requested", "expected"),
    [
        ("throughput", True, None, None, (1, 2, 4, 8, 16, 32)),
        ("latency:p50", True, None, None, (1,)),
        ("latency:p50", True, None, (1, 4, 4), (1, 4)),
        ("throughput", True, 3, None, (3,)),
        ("throughput", False, None, None, (1,)),
    ],
)
def test_batch_sizes(objective, dynamic, pinned, requested, expected) -> None:  # type: ignore[no-untyped-def]
    got = default_batch_sizes(
        objective=objective, has_dynamic_batch=dynamic, pinned=pinned, requested=requested
    )
    assert got == expected


def test_batch_sizes_need_a_dynamic_batch() -> None:
    with pytest.raises(UsageError, match="dynamic batch"):
        default_batch_sizes(
            objective="throughput", has_dynamic_batch=False, pinned=None, requested=(2,)
        )
    with pytest.raises(UsageError, match="malformed"):
        parse_batch_sizes("1,two")


def test_grid_enumerates_every_allowed_combination() -> None:
    space = load_space("cpu").resolve(batch_sizes=(1,), cpus=2)
    grid = space.grid()
    # intra 2 x (sequential + parallel x inter 2) x 5 levels x arena x mem pattern
    # x (spinning off + spinning on x force_spinning_stop 2) x denormals x block base x prepacking
    # x free-dimension overrides
    assert len(grid) == 2 * 3 * 5 * 2 * 2 * (1 + 2) * 2 * 2 * 2 * 2
    assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)
    assert all(
        ("inter_op_num_threads" in p) == (p["execution_mode"] == "ORT_PARALLEL") for p in grid
    )
    assert len(load_space("cpu").resolve(batch_sizes=(1, 2), cpus=2).grid()) == 2 * len(grid)


def test_open_loop_knobs_and_their_presets() -> None:
    """Under open-loop traffic the server threads and (for a dynamic batch dim) the batcher are
    searched; the known layouts are valid points; a delay without batching is dropped."""
    from autotune.space import load_space

    closed = load_space("cpu").resolve(batch_sizes=[1], cpus=4)
    assert not {"server_threads", "max_batch", "max_queue_delay_ms"} & {
        p.name for p in closed.params
    }
    space = load_space("cpu").resolve(
        batch_sizes=[1], cpus=4, open_loop=True, batching=True, max_delay_ms=25.0
    )
    knobs = {p.name: p for p in space.params}
    assert knobs["server_threads"].bounds() == (1, 8)
    assert knobs["sessions"].bounds() == (1, 4)
    assert knobs["max_queue_delay_ms"].bounds() == (0.0, 25.0)
    no_batcher = load_space("cpu").resolve(batch_sizes=[1], cpus=4, open_loop=True)
    assert "max_batch" not in {p.name for p in no_batcher.params}
    presets = space.serving_presets(1)
    configs = [space.config_from_params(p) for p in presets]
    assert [c.server_threads for c in configs] == [4, 4, 4]
    assert [c.sessions for c in configs] == [1, 4, 1]
    assert [c.max_batch for c in configs] == [1, 1, 4]
    assert configs[2].max_queue_delay_ms == 2.0
    point = dict(presets[0], max_queue_delay_ms=7.3, sessions=4, server_threads=2)
    config = space.config_from_params(point)
    assert config.max_queue_delay_ms == 0.0  # no batcher, no delay: equal configs compare equal
    assert config.sessions == 2  # never more sessions than server threads to call them
