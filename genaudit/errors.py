"""User-facing errors: the CLI prints their message as one paragraph and exits with code 2."""


class GenauditError(Exception):
    """A problem with the user's input (model, data, options), with a message that says how to fix it."""
