"""Writing results: ``best.json`` (a :class:`TunedConfig`), always atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autotune.config import Measurement, SearchFigures, TunedConfig
from autotune.model import ModelInfo
from autotune.objectives import Objective
from autotune.study import TuneResult


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: never a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tuned_config(
    result: TuneResult,
    *,
    model: ModelInfo,
    objective: Objective,
    environment: Mapping[str, Any],
) -> TunedConfig:
    """best.json's content: the confirmed figures when a confirmation ran, else the search's."""
    found, base = result.search_best.outcome, result.baseline.outcome
    assert isinstance(found, Measurement) and isinstance(base, Measurement)
    search = SearchFigures(result.search_best.number, found, base, objective.gain(found, base))
    metrics, baseline, speedup = found, base, search.speedup
    confirmation = result.confirmation
    if confirmation is not None:
        winner = confirmation.figures(confirmation.winner)
        baseline = confirmation.baseline.measurement or base
        metrics = winner.measurement or baseline
        speedup = winner.gain
    return TunedConfig(
        config=result.best.config,
        model_path=model.path,
        model_sha256=model.sha256,
        objective=objective.name,
        metrics=metrics,
        baseline=baseline,
        speedup=speedup,
        study_name=result.study_name,
        storage=result.storage,
        trial_number=result.best.number,
        environment=dict(environment),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        search=search,
        confirmation=confirmation,
    )


def write_best(tuned: TunedConfig, out_dir: Path) -> Path:
    path = out_dir / tuned.study_name / "best.json"
    write_json_atomic(path, tuned.to_dict())
    return path
