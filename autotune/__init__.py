"""autotune: automated tuning of ONNX Runtime inference sessions.

>>> import autotune
>>> session = autotune.load_session("results/<study>/best.json")
"""

from __future__ import annotations

__version__ = "0.1.0"

from autotune.errors import AutotuneError, UsageError  # noqa: E402
from autotune.session import load_session  # noqa: E402
from autotune.tuning import tune  # noqa: E402

__all__ = ["AutotuneError", "UsageError", "__version__", "load_session", "tune"]
