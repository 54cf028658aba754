"""The one exception type for mistakes a user can fix.

A `UserError` carries a one-paragraph message that names the key, file or value at fault and what
would be accepted. The CLI prints it without a traceback and exits with status 2; anything else
that escapes is a bug in nlptool and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's config, files or data, described so they can fix it."""


def check(condition: bool, message: str) -> None:
    """A config check: raise ValueError(message) unless `condition` holds. The `validate()` methods
    of the typed configs use it; the caller turns the ValueError into a UserError."""
    if not condition:
        raise ValueError(message)
