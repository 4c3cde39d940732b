"""Errors of the samplers."""


class StreamExhausted(RuntimeError):
    """A finite stream has no sample at the index the blend or the caller asked for."""
