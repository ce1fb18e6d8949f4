"""Network errors: re-exported from `lorakit.errors` so the CLI prints them without a traceback."""

from ..errors import NetworkError

__all__ = ["NetworkError"]
