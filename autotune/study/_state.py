"""What the tuner's phases hand each other: frozen, replaced, never changed in place.

``Run`` holds what every phase uses and none changes (the open study, the callbacks, the
clock). ``State`` is what one phase passes to the next: the request (the screen narrows its
variants), the study's trials, the baseline, how the search ended and what the confirmation
and the sweep found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autotune.config import ConcurrencySweep, Confirmation
from autotune.study._records import TrialRecord
from autotune.study._request import TuneRequest
from autotune.study._trial import Measurer

if TYPE_CHECKING:
    from optuna import Study


@dataclass(frozen=True)
class Run:
    """The fixed context of one invocation."""

    study: Study
    say: Callable[[str], None]
    on_record: Callable[[tuple[TrialRecord, ...], TrialRecord, int], None]  # records, new, ran
    started: float  # time.perf_counter() when the invocation began

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True)
class State:
    request: TuneRequest
    measurer: Measurer
    records: tuple[TrialRecord, ...]  # the study's trials as last read
    baseline: TrialRecord | None = None
    ran: int = 0  # trials this invocation measured
    stop_reason: str = "trial budget reached"
    failed_out: bool = False  # stopped by failures
    interrupted: bool = False  # Ctrl-C or SIGTERM: later phases do not run
    search_s: float = 0.0
    confirmation: Confirmation | None = None
    confirmation_s: float = 0.0
    reused: bool = False  # the stored confirmation of a finished study; nothing was measured
    sweep: ConcurrencySweep | None = None

    @property
    def the_baseline(self) -> TrialRecord:
        """The baseline, once its phase has run (it raises when there is none)."""
        assert self.baseline is not None, "the baseline phase runs first"
        return self.baseline
