"""Atomic file writes: a kill never leaves a half file in place of a good one."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from flaxae.errors import OutputError


def check_output(path: str | os.PathLike, overwrite: bool = True) -> Path:
  """Checks that ``path`` can be written: its folder exists and is writable.

  Raises:
    OutputError: the folder is missing or read-only, ``path`` is a folder, or
      ``path`` exists and ``overwrite`` is False.
  """
  path = Path(path)
  if path.is_dir():
    raise OutputError(f"cannot write {path}: it is a folder; name a file")
  folder = path.parent if str(path.parent) else Path(".")
  if not folder.is_dir():
    raise OutputError(f"cannot write {path}: folder {folder} does not exist")
  if not os.access(folder, os.W_OK):
    raise OutputError(f"cannot write {path}: folder {folder} is not writable")
  if path.exists() and not overwrite:
    raise OutputError(f"{path} exists; pass --overwrite to replace it")
  return path


def make_dir(path: str | os.PathLike) -> Path:
  """Creates a folder (and its parents) or raises :class:`OutputError`."""
  path = Path(path)
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OutputError(f"cannot create folder {path}: {e.strerror or e}") from e
  return path


def _read_umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# Read once, at import: reading the umask means setting it, process-wide, and
# a thread creating a file meanwhile (Orbax saves in the background) would get
# the wrong permissions if it were read at every write.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
  """Yields a temporary path beside ``path``; renames it over ``path`` on success.

  The temporary file keeps ``path``'s suffix (so libraries that look at it,
  like matplotlib, pick the right format) and is removed on failure; it is
  flushed to disk before the rename, so that a crash leaves the old file or
  the whole new one, never an empty one. The result gets the permissions of a
  newly created file (``0o666`` less the umask), not ``mkstemp``'s private
  ``0o600``.
  """
  path = check_output(path, overwrite)
  try:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=f".tmp{path.suffix}")
  except OSError as e:
    raise OutputError(f"cannot write {path}: {e.strerror}") from e
  os.close(fd)
  try:
    yield Path(tmp)
    _sync(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def _sync(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> None:
  with atomic_path(path, overwrite) as tmp:
    tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
  write_bytes(path, text.encode(), overwrite)


def strict(obj: Any) -> Any:
  """``obj`` with NaN and Inf as None: JSON has no such numbers (Python writes
  ``NaN``, which strict readers, ``jq`` among them, refuse)."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  return obj


def to_json(obj: Any, **kwargs: Any) -> str:
  """Strict JSON of ``obj`` (see :func:`strict`)."""
  return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = True) -> None:
  write_text(path, to_json(obj, indent=2, sort_keys=True) + "\n", overwrite)
