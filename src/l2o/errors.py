"""Errors that reach the user as one line (the CLI prints them and exits non-zero).

Every problem with the user's input or files is an ``L2OError``: the CLI prints its message
on one line and exits with status 2. Any other exception is a bug in l2o: the CLI prints a
short "internal error" line (the traceback with ``--debug``).
"""


class L2OError(Exception):
    """A problem with the user's input or files, with a message that says what would be valid."""


class InvalidInput(L2OError, ValueError):
    """A bad argument or configuration value. Also a ``ValueError``, as Python users expect."""


class CheckpointError(L2OError):
    """A checkpoint is missing, corrupt, or does not fit the optimizer it should load into."""


class MetaTrainingDiverged(L2OError):
    """Too many non-finite meta-losses or meta-gradients in a row."""


class RunDirectoryExists(L2OError):
    """Refusing to overwrite an existing run or output directory without --force."""
