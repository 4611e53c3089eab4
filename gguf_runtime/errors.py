"""Exceptions that carry a one-line message fit for a user."""


class GGUFError(ValueError):
    """The file is not a valid GGUF file (names the field and byte offset)."""


class ModelError(ValueError):
    """The file parses but cannot be run (unknown architecture, bad shapes, ...)."""
