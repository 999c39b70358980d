"""The project's user errors: a problem the person running it can fix.

Each says, in one or two lines, what is wrong, where, and what to do. The CLI prints the message alone and
the Dagster layer turns it into a step failure with that message (no traceback to read); anything else is
a bug and keeps its traceback.
"""


class LookupsError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and how to fix it."""
