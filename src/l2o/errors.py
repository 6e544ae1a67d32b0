"""Errors that reach the user as one line (the CLI prints them and exits non-zero)."""


class L2OError(Exception):
    """A problem with the user's input or files, with a message that says what would be valid."""


class CheckpointError(L2OError):
    """A checkpoint is missing, corrupt, or does not fit the optimizer it should load into."""


class MetaTrainingDiverged(L2OError):
    """Too many non-finite meta-losses or meta-gradients in a row."""


class RunDirectoryExists(L2OError):
    """Refusing to overwrite an existing run or output directory without --force."""
