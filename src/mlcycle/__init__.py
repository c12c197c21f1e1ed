"""mlcycle: the machine-learning lifecycle as one data-versioned, reproducible DVC pipeline."""

__version__ = "0.1.0"
