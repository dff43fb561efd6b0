"""Reading and writing the arrays the apps take and give: ``.npy``, ``.npz``, IDX."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from flaxae import io
from flaxae.data import read_idx, write_idx
from flaxae.errors import DataError, OutputError

_NPZ_KEYS = ("x_test", "x", "x_train")
_IDX_ENDINGS = (".idx", "ubyte", ".idx.gz", "ubyte.gz")


def read_array(path: str | os.PathLike) -> np.ndarray:
  """The array in a ``.npy`` file, a ``.npz`` file (``x_test``, ``x`` or
  ``x_train``) or an IDX file (gzip or raw); recognised by content.

  Raises:
    DataError: the file is missing, unreadable or of another format.
  """
  path = Path(path)
  if not path.exists():
    raise DataError(f"input file {path} does not exist")
  if not path.is_file():
    raise DataError(f"input {path} is not a file")
  with open(path, "rb") as f:
    magic = f.read(6)
  if magic == b"\x93NUMPY" or magic[:2] == b"PK":
    try:
      with open(path, "rb") as f:
        loaded = np.load(f, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
          return loaded
        with loaded:
          for key in _NPZ_KEYS:
            if key in loaded.files:
              return loaded[key]
          keys = ", ".join(sorted(loaded.files)) or "(none)"
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise DataError(f"cannot read {path} (truncated or corrupt?): {e}") from e
    raise DataError(f"{path} has arrays {keys}; expected one of {', '.join(_NPZ_KEYS)}")
  return read_idx(path)


def is_idx_name(path: str | os.PathLike) -> bool:
  """Whether ``path`` is named like an IDX file (``*-ubyte``, ``*.idx``, ``.gz``)."""
  return str(path).endswith(_IDX_ENDINGS)


def check_array_output(path: str | os.PathLike, overwrite: bool) -> Path:
  """Checks that ``path`` is a writable ``.npy`` or IDX name; see ``io.check_output``."""
  path = io.check_output(path, overwrite)
  if path.suffix != ".npy" and not is_idx_name(path):
    raise OutputError(
        f"cannot write {path}: name the output FILE.npy, or FILE.idx / "
        "FILE-ubyte[.gz] for IDX")
  return path


def write_array(path: str | os.PathLike, array: np.ndarray, overwrite: bool) -> None:
  """Writes ``array`` atomically as ``.npy``, or as IDX for IDX-like names."""
  path = check_array_output(path, overwrite)
  if is_idx_name(path):
    write_idx(path, array)
    return
  with io.atomic_path(path, overwrite) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, np.asarray(array), allow_pickle=False)
      f.flush()
      os.fsync(f.fileno())
