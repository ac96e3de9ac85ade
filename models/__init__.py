"""Diff-Tuning training library: the method, model families, trainer, checkpoints and CLI.

Importing this package has no side effects (no logging config, no global torch flags); those belong
to entry points such as :mod:`models.cli`.
"""

__version__ = "0.1.0"
