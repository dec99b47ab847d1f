"""The exception types that user-facing entry points turn into a one-line error."""

from __future__ import annotations

import errno
import os
import sys

EXIT_INPUT_ERROR = 2  # the exit code of every entry point for bad input
#: errno values that only a write raises: the disk (or quota) is full, or the file system is read-only.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class InputError(ValueError):
    """Bad input from a user: a file, a field or a value that is not what was expected.

    The message is a single line that names the file or field and says what was expected. The CLI
    prints it without a traceback and exits non-zero.
    """


class OutputError(InputError):
    """An output location that cannot be written: not a folder, read-only, no permission, or a full disk.

    A subclass of :class:`InputError`, so every entry point reports it the same way (one line, exit 2):
    the user chose the location, and the message names it.
    """


def reason(error: OSError) -> str:
    """``No space left on device``: the system's words for an OSError."""
    return os.strerror(error.errno) if error.errno else str(error)


def write_failure(error: BaseException | None) -> OSError | None:
    """The OSError of :data:`WRITE_ERRNOS` behind ``error``, if any (``torch.save`` wraps it in a RuntimeError)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def as_user_error(error: BaseException) -> InputError | None:
    """What an entry point reports in one line: an :class:`InputError` itself, a full disk or read-only
    file system met by a write as an :class:`OutputError` naming the file; ``None`` for anything else (a bug,
    which keeps its traceback)."""
    if isinstance(error, InputError):
        return error
    cause = write_failure(error)
    if cause is None:
        return None
    return OutputError(f"{cause.filename or 'an output file'}: cannot write: {reason(cause)}")


def report_error(error: Exception, prefix: str = "error") -> int:
    """In an entry point's ``except Exception``: print a user error as ``<prefix>: <message>`` on stderr and
    return :data:`EXIT_INPUT_ERROR`; re-raise anything else, with its traceback."""
    user_error = as_user_error(error)
    if user_error is None:
        raise error
    print(f"{prefix}: {user_error}", file=sys.stderr)
    return EXIT_INPUT_ERROR
