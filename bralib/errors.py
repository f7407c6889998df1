"""The errors bralib raises with a complete message for the user, shared by every area.

`bralib.cli.main` prints a `BralibError` (and the few built-in errors that validation raises, see
`bralib.cli.USER_ERRORS`) as one line, ``bralib <cmd>: error: ...``, and exits 2; anything else is a bug and
keeps its full traceback. ``bralib --traceback ...`` (or ``BRALIB_TRACEBACK=1``) shows the traceback always.
"""


class BralibError(Exception):
    """An error whose message says all a user needs: what was wrong and what is allowed."""


class UsageError(BralibError, ValueError):
    """A user's bad input: the CLI prints it as one line and exits 2.

    Subclasses ValueError so code that already catches ValueError for bad arguments keeps working.
    """


class CheckpointError(UsageError):
    """A checkpoint or weights file that cannot be used: missing, unreadable, damaged, unsafe, or of the wrong kind."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint or weights file that does not exist."""


class WriteError(BralibError, OSError):
    """A file could not be written (full disk, no permission); whatever was there before is left unchanged."""
