"""The one exception type that user-facing entry points turn into a one-line error."""


class InputError(ValueError):
    """Bad input from a user: a file, a field or a value that is not what was expected.

    The message is a single line that names the file or field and says what was expected. The CLI
    prints it without a traceback and exits non-zero.
    """
