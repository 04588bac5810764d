"""The one exception type kit raises for problems a user can act on.

The CLI turns a KitError into one line on stderr and exit code 2.
"""


class KitError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""
