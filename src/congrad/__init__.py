"""congrad: conflicting-gradient filtering for multilingual preference alignment."""

__version__ = "0.1.0"
