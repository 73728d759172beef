"""runwatch: monitor the behaviour of models while they train."""

__version__ = "0.1.0"
