"""Errors of flaxae's own: every problem a user can cause raises one of these.

The CLI turns any :class:`FlaxaeError` into one line on stderr and exit status 2;
anything else is a bug in flaxae and keeps its traceback.
"""


class FlaxaeError(Exception):
  """Base class of every user-facing flaxae error."""


class ConfigError(FlaxaeError, ValueError):
  """A configuration value is unknown, of the wrong type or out of range."""


class DataError(FlaxaeError, ValueError):
  """A data set is missing, unreadable, or of the wrong shape, dtype or range."""


class ShapeError(DataError):
  """An array does not have the shape the model or the mesh needs."""


class CheckpointError(FlaxaeError):
  """A run directory or checkpoint is missing, corrupt or from another config."""


class OutputError(FlaxaeError):
  """An output path cannot be written (missing folder, read-only, exists)."""


class TrainingError(FlaxaeError):
  """Training cannot go on (for example too many non-finite steps in a row)."""


class FormatError(FlaxaeError, ValueError):
  """A compressed file is malformed, truncated, corrupt or from another model."""


class KernelError(FlaxaeError):
  """A native kernel the config asks for cannot be built or loaded (no
  compiler, no MKL)."""
