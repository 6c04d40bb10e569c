"""The one exception root of autotune.

Every error a user can cause or fix derives from :class:`AutotuneError`; the CLI turns it into
one ``Error: ...`` line and a non-zero exit code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AutotuneError(Exception):
    """A problem the user can fix; the message says what to do. Exit code 1."""

    exit_code = 1


class UsageError(AutotuneError):
    """Bad command-line input, model input specification or search-space file. Exit code 2."""

    exit_code = 2
