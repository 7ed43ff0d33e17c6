"""User-facing errors: the CLI prints these as one line, never a traceback."""


class RtsegError(Exception):
    """A user mistake or bad input: message names the file/key, what was found, what was expected."""


class ConfigError(RtsegError):
    """Invalid configuration value or key."""


class DataError(RtsegError):
    """Unreadable, inconsistent or mismatched input data."""
