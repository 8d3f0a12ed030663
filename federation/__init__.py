"""federation: signed, verifiable hash-list feeds over C2SP tlog-tiles."""

__version__ = "0.1.0"
