from __future__ import annotations

import json

import pytest

from autotune.config import (
    Confirmation,
    FeedPlan,
    InputSpec,
    Measurement,
    MeasureSettings,
    ProviderSpec,
    RoundFigures,
    SearchFigures,
    TrialConfig,
    TunedConfig,
    WorkerJob,
)
from autotune.errors import AutotuneError
from tests.conftest import MEASUREMENT

CONFIG = TrialConfig(
    providers=(ProviderSpec("CPUExecutionProvider", {"arena_extend_strategy": "1"}),),
    session_options={
        "intra_op_num_threads": 2,
        "execution_mode": "ORT_PARALLEL",
        "enable_cpu_mem_arena": False,
    },
    config_entries={"session.intra_op.allow_spinning": "0"},
    batch_size=8,
    io_binding=True,
)


def test_trial_config_round_trip_through_json() -> None:
    data = json.loads(json.dumps(CONFIG.to_dict()))
    assert data["schema"] == "autotune.config/v1"
    assert TrialConfig.from_dict(data) == CONFIG


def test_trial_config_refuses_unknown_schema_and_options() -> None:
    data = CONFIG.to_dict()
    with pytest.raises(AutotuneError, match="schema"):
        TrialConfig.from_dict({**data, "schema": "autotune.config/v9"})
    with pytest.raises(AutotuneError, match="unknown session options"):
        TrialConfig.from_dict({**data, "session_options": {"intra_op_threads": 2}})


def test_worker_job_round_trip() -> None:
    plan = FeedPlan(
        inputs=(InputSpec("x", "float32", (1, 3, 8, 8), True), InputSpec("sr", "int64", (), False)),
        seed=7,
        data_path="/data/feeds.npz",
    )
    job = WorkerJob("/m.onnx", CONFIG, plan, MeasureSettings(min_runs=3, min_time_s=0.05))
    assert WorkerJob.from_json(job.to_json()) == job


def test_measurement_round_trip_and_startup() -> None:
    data = json.loads(json.dumps(MEASUREMENT.to_dict()))
    assert data["startup_s"] == pytest.approx(0.25)
    assert Measurement.from_dict(data) == MEASUREMENT


def test_tuned_config_round_trip() -> None:
    tuned = TunedConfig(
        config=CONFIG,
        model_path="/m.onnx",
        model_sha256="ab" * 32,
        objective="throughput",
        metrics=MEASUREMENT,
        baseline=MEASUREMENT,
        speedup=1.0,
        study_name="m-abababab-cpu-throughput",
        storage="sqlite:///results/autotune.db",
        trial_number=3,
        environment={"cpu_model": "x"},
        created="2026-11-21T00:00:00+00:00",
        search=SearchFigures(3, MEASUREMENT, MEASUREMENT, 1.1),
        confirmation=Confirmation(
            rounds=3,
            baseline=RoundFigures(0, (1.0, 1.1, 0.9), 0, 1.0, 0.1, 0, 0, 1.0, MEASUREMENT),
            finalists=(RoundFigures(3, (1.2, 1.3), 1, 1.25, 0.04, 2, 2, 1.25, None),),
            winner=3,
            threshold=1.07,
            verdict="trial #3 is 1.25x better",
        ),
    )
    data = json.loads(json.dumps(tuned.to_dict()))
    assert data["schema"] == "autotune.tuned/v1"
    assert TunedConfig.from_dict(data) == tuned


def test_describe_is_short_and_names_the_knobs() -> None:
    text = CONFIG.describe()
    assert "batch=8" in text and "intra=2" in text and "mode=parallel" in text
    assert TrialConfig().describe() == "ORT defaults"
