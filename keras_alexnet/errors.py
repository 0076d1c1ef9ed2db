"""The package's one exception base: errors a user causes and can fix.

Every error class a command can raise on bad input (a path, a value, a file that does not
fit) derives from `Error` and from the built-in class that says what kind it is
(ValueError, RuntimeError, OSError, ImportError), so callers can catch either;
`keras_alexnet.cli` prints an `Error` as one line, never a traceback.
"""


class Error(Exception):
    """Base of the package's user errors; the message says what to do."""
