"""Errors the domain raises: each says what is wrong and what to do."""


class InvalidInput(ValueError):
    """A client sent something the servers will not accept; nothing was changed."""


class ConfigurationError(ValueError):
    """A property is missing or invalid; the message names it and the fix."""
