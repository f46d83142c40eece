"""Exceptions that the CLI turns into one clear line on stderr (no traceback)."""


class UserError(Exception):
    """Bad input from the user: a file, a flag or a config value.

    The message must name the file (or option) and the problem in one line. The CLI
    prints it and exits with code 2.
    """


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, unsafe or does not fit the model."""
