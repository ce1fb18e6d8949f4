"""Errors that reach the user: each says what went wrong, where, and what to do."""


class LorakitError(Exception):
    """An error the command line prints as a plain message, without a traceback."""


class ModelError(LorakitError):
    """A model file that lorakit cannot use (wrong kind, damaged, unsupported)."""


class UnsafeFileError(ModelError):
    """A pickle file that asks to run code while loading."""


class NetworkError(LorakitError):
    """A LoRA/LyCORIS network that cannot be built, read or applied as asked."""
