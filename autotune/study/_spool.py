"""Measured trials the database could not take: kept in files until the study resumes.

When the storage stays away past the retry bound while a measured trial is being written,
the trial (its parameters, attributes, constraints and objective values) goes to
``OUT/STUDY/spool/<id>.json`` and the tuner stops. The next run of the same command adds every
spooled trial to the study before it asks for new ones; the half-written original, left
RUNNING by a tuner that has exited, is failed as interrupted and never counts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.study._records import optuna_module

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial

SPOOL_SCHEMA = "autotune.spool/v1"


def spool_trial(
    folder: str,
    trial: Trial,
    attrs: Mapping[str, Any],
    constraints: Mapping[str, float],
    values: Sequence[float] | None,
) -> Path:
    """Write one measured trial to ``folder`` (atomically); its file."""
    optuna = optuna_module()
    target = Path(folder or ".")
    target.mkdir(parents=True, exist_ok=True)
    spool_id = uuid.uuid4().hex
    document = {
        "schema": SPOOL_SCHEMA,
        "id": spool_id,
        "number": trial.number,
        "params": dict(trial.params),
        "distributions": {
            name: optuna.distributions.distribution_to_json(dist)
            for name, dist in trial.distributions.items()
        },
        "user_attrs": dict(attrs),
        "constraints": dict(constraints),
        "values": list(values) if values is not None else None,
    }
    path = target / f"{spool_id}.json"
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(json.dumps(document, default=str))
    Path(partial).replace(path)
    return path


def replay_spool(study: Study, folder: str, say: Callable[[str], None]) -> int:
    """Add every spooled trial of ``folder`` to ``study`` once; the number added."""
    optuna = optuna_module()
    if not folder or not Path(folder).is_dir():
        return 0
    known = {t.user_attrs.get("spool_id") for t in study.get_trials(deepcopy=False)}
    added = 0
    for path in sorted(Path(folder).glob("*.json")):
        document = json.loads(path.read_text())
        if document.get("schema") != SPOOL_SCHEMA:
            continue
        if document["id"] not in known and not _landed(study, document):
            values = document["values"]
            state = optuna.trial.TrialState.COMPLETE if values else optuna.trial.TrialState.FAIL
            frozen = optuna.trial.create_trial(
                state=state,
                values=values or None,
                params=document["params"],
                distributions={
                    name: optuna.distributions.json_to_distribution(text)
                    for name, text in document["distributions"].items()
                },
                user_attrs={**document["user_attrs"], "spool_id": document["id"]},
                constraints=document["constraints"] or None,
            )
            study.add_trial(frozen)
            added += 1
        path.unlink()
    if added:
        say(f"{added} trial(s) measured while the database was away: added to the study")
    return added


def _landed(study: Study, document: Mapping[str, Any]) -> bool:
    """Whether the original trial reached the database after all (its write was in flight)."""
    number = document["number"]
    trials = study.get_trials(deepcopy=False)
    if number >= len(trials):
        return False
    trial = trials[number]
    same = trial.user_attrs.get("config") == document["user_attrs"].get("config")
    return bool(
        same
        and trial.state.is_finished()
        and "spool_id" not in trial.user_attrs
        and ("failure_kind" in trial.user_attrs or trial.state.name == "COMPLETE")
        and trial.user_attrs.get("failure_kind") != "interrupted"
    )
