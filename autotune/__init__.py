"""autotune: automated tuning of ONNX Runtime inference sessions.

>>> import autotune
>>> tuned = autotune.tune("model.onnx", objective="throughput", trials=30)
>>> session = autotune.load_session(f"results/{tuned.study_name}/best.json")

The public names load lazily, so the measuring worker imports only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.errors import AutotuneError, UsageError

__version__ = "0.1.0"
__all__ = ["AutotuneError", "UsageError", "__version__", "load_pool", "load_session", "tune"]

if TYPE_CHECKING:
    from autotune.service.deploy import load_pool, load_session
    from autotune.tuning import tune


def __getattr__(name: str) -> Any:
    if name == "load_session":
        from autotune.service.deploy import load_session

        return load_session
    if name == "load_pool":
        from autotune.service.deploy import load_pool

        return load_pool
    if name == "tune":
        from autotune.tuning import tune

        return tune
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")
