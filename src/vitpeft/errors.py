"""One exception type for every user-facing mistake.

The CLI prints a VitpeftError as a single line and exits 2; anything else is a
bug and keeps its traceback.
"""


class VitpeftError(Exception):
    """Bad input, bad data or a refused operation, explained in one message."""
