"""User-facing errors: the CLI prints their message as one paragraph and exits with code 2."""


class GenauditError(Exception):
    """A problem with the user's input (model, data, options), with a message that says how to fix it."""


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """The first line of an exception's message (libraries append tracebacks and hints below it), cut to `limit`
    characters; the exception type's name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
