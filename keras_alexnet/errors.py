"""The package's one exception base: errors a user causes and can fix.

Every error class a command can raise on bad input (a path, a value, a file that does not
fit) derives from `Error` and from the built-in class that says what kind it is
(ValueError, RuntimeError, OSError, ImportError), so callers can catch either;
`keras_alexnet.cli` prints an `Error` as one line, never a traceback.

A message names a setting as the Python API spells it, in backticks (`field`): a library
user reads `batch_size`, and a command rewrites it as the flag that sets it
(`cli.with_flags`: --batch-size).
"""


class Error(Exception):
    """Base of the package's user errors; the message says what to do."""


def field(name):
    """How a message names the setting `name` (a config field, an argument): `name`."""
    return f"`{name}`"
