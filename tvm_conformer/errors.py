"""The one exception type the CLI turns into a one-line message."""


class UserError(Exception):
    """A problem the user can fix: the message names it and says how (one line, no traceback)."""
