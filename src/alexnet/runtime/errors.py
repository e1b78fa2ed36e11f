"""One exception for every user-facing mistake: the CLI prints it as one line, exit 2."""


class UsageError(ValueError):
    """Bad input from the user (argument, file, config): reported without a traceback."""
