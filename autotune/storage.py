"""Study storage URLs: SQLite under the results folder by default, or a shared PostgreSQL.

Several machines of the same kind can run ``autotune run ... --storage postgresql://...`` against
one study; each measures its own trials and the study keeps them together. A plain
``postgresql://`` URL is bound to whichever PostgreSQL driver is installed (psycopg 3 from
``ort-autotune[postgres]``, or psycopg2), so users can paste the URL their database gives them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from autotune.errors import UsageError

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_POSTGRES_DRIVERS = ("psycopg", "psycopg2")  # SQLAlchemy dialect name == module name


def storage_url(url: str | None, out: Path) -> str:
    """The URL the study lives at: ``url`` made usable, or SQLite in ``out``."""
    if not url:
        return f"sqlite:///{out.resolve() / 'autotune.db'}"
    scheme, sep, rest = url.partition("://")
    if sep and scheme in _POSTGRES_SCHEMES:
        driver = next((d for d in _POSTGRES_DRIVERS if importlib.util.find_spec(d)), None)
        if driver is None:
            raise UsageError(
                f"--storage {shown(url)!r} needs a PostgreSQL driver: "
                "pip install 'ort-autotune[postgres]'"
            )
        return f"postgresql+{driver}://{rest}"
    return url


def shown(url: str) -> str:
    """``url`` with its password masked, for the terminal and for best.json."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.split("@", 1)[-1] if "@" in url else url
