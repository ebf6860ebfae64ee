"""The foundation every layer may use: the package's errors, atomic files, collective
(every process learns the outcome), progress, metrics (numpy) and plots (matplotlib).
It imports nothing else from accel_signs."""

__version__ = "0.1.0"
