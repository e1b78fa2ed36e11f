"""What the CLI reports to the user: a mistake (one line, exit 2) or a notice (one line, and on)."""


class UsageError(ValueError):
    """Bad input from the user (argument, file, config): reported without a traceback."""


class Notice(UserWarning):
    """Something the user asked for that works but is worth knowing of (a precision the
    CPU only emulates): the CLI prints it as one line, `alexnet: note: ...`, and goes on."""
