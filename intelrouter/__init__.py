"""IntelRouter: a query router and the continuous-training loop that keeps it improving."""

__version__ = "0.1.0"
