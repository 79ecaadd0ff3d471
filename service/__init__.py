"""invariant-serve: HTTP serving whose predictions are bitwise independent of the request batch."""

__version__ = "0.1.0"
