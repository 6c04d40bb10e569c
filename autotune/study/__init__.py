"""The tuner: an Optuna study of isolated, measured trials. The only package that imports optuna.

``tune`` runs a study as phases (open, baseline, screen, search, confirm, sweep);
``load_study_view`` and friends read stored studies back for ``show``, ``export`` and ``report``.
"""

from autotune.study._open import check_storage, open_study, study_attrs
from autotune.study._records import TrialRecord, pareto_of, record_of, records_of
from autotune.study._request import TuneRequest
from autotune.study._retry import RetryPolicy, StorageUnavailable, is_transient
from autotune.study._trial import Measurer
from autotune.study._tune import Progress, TuneResult, tune
from autotune.study._view import (
    StudyView,
    list_studies,
    load_study_view,
    param_importances,
    studies_progress,
    the_study,
)

__all__ = [
    "Measurer",
    "Progress",
    "StudyView",
    "TrialRecord",
    "TuneRequest",
    "TuneResult",
    "check_storage",
    "list_studies",
    "load_study_view",
    "open_study",
    "param_importances",
    "pareto_of",
    "RetryPolicy",
    "StorageUnavailable",
    "is_transient",
    "record_of",
    "records_of",
    "studies_progress",
    "study_attrs",
    "the_study",
    "tune",
]
