"""The one exception type dkdlib raises for bad input: its message names the problem and the fix."""


class DKDError(ValueError):
    """Bad input to dkdlib (a wrong name, value, file or shape). The message says how to fix it."""
