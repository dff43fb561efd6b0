"""Checkpoints: the only module that imports Orbax.

A checkpoint holds the whole :class:`~flaxae.train.state.TrainState` (params,
optimizer state, step — the position in the data order — and the run key) and
a JSON item with the full config and progress. Orbax writes each step to a
temporary directory and renames it when complete, so a killed save is never
restored.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

from flaxae.errors import CheckpointError, OutputError


class Checkpointer:
  """Saves and restores train states under ``directory``, keeping the last ``keep``.

  ``read_only`` (loading a run, evaluating it, the apps) neither creates,
  deletes nor cleans anything: a training process may be writing a checkpoint
  in the same directory meanwhile, and its unfinished temporary folder is not
  the reader's to remove.
  """

  def __init__(self, directory: str | os.PathLike, keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(os.fspath(directory))
    if read_only:
      # (Not Orbax's read_only option: it logs warnings on every load.)
      options = ocp.CheckpointManagerOptions(
          max_to_keep=None, create=False, cleanup_tmp_directories=False,
          enable_async_checkpointing=False)
    else:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, enable_async_checkpointing=True,
          cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  @contextlib.contextmanager
  def _writing(self) -> Iterator[None]:
    """Orbax's failures to write (a full disk, a folder made read-only) as an
    OutputError; the background save's surface at the next save, wait or close."""
    try:
      yield
    except Exception as e:  # Orbax raises ValueError, OSError, ... for the same cause.
      raise OutputError(
          f"cannot write a checkpoint in {self.directory} ({type(e).__name__}: "
          f"{str(e).splitlines()[0][:200] if str(e) else ''}); free space or fix the "
          "folder's permissions, then run the same command to resume from the last "
          "complete checkpoint") from e

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts saving ``state`` and ``meta`` as ``step`` (finishes in background)."""
    with self._writing():
      self._manager.save(
          step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        meta=ocp.args.JsonSave(meta)),
          force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """The state (shaped and sharded like ``abstract_state``) and meta of ``step``.

    Args:
      abstract_state: A tree of ``jax.ShapeDtypeStruct`` with shardings, e.g.
        from ``jax.eval_shape`` of the state's initialiser.
      step: Which checkpoint; the latest if None.
    """
    step = self._checked_step(step)
    with self._reading(step):
      restored = self._manager.restore(
          step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def meta(self, step: int | None = None) -> dict[str, Any]:
    """The JSON item of ``step`` (the latest if None) alone: its config and progress."""
    step = self._checked_step(step)
    with self._reading(step):
      restored = self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def _checked_step(self, step: Any) -> int:
    if step is not None and (isinstance(step, bool)
                             or not isinstance(step, (int, np.integer))):
      raise CheckpointError(f"a checkpoint's step is an integer, got {step!r}")
    step = self.latest_step() if step is None else int(step)
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    steps = self._manager.all_steps()
    if step not in steps:
      raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; it has "
                            f"steps {', '.join(map(str, sorted(steps))) or 'none'}")
    return step

  @contextlib.contextmanager
  def _reading(self, step: int) -> Iterator[None]:
    _ignore_callbacks_into_closed_loops()
    try:
      yield
    except Exception as e:  # Orbax raises many types for a damaged directory.
      # (TensorStore's messages go on with the repr of a bound method.)
      detail = str(e).split("\n")[0].split(" See full TensorStore details")[0][:200]
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} cannot be read ({type(e).__name__}: "
          f"{detail}); delete that step's folder to fall back to an earlier one") from e

  def wait(self) -> None:
    """Waits for the background save (an OutputError if it failed)."""
    with self._writing():
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the background save (an OutputError if it failed), then closes."""
    with self._writing():
      try:
        self._manager.wait_until_finished()
      finally:
        self._manager.close()


def _ignore_callbacks_into_closed_loops() -> None:
  """Drops the "Event loop is closed" errors of TensorStore's callbacks.

  A restore that fails (a damaged file) leaves TensorStore's other reads in
  flight; as they finish, their callbacks call into the asyncio loop Orbax
  has closed, and each error reaches ``sys.unraisablehook``, whose default
  prints a traceback: dozens, during the failed restore and for a moment
  after it, around the one error that says what failed. The filter, chained
  in front of the hook in place once per process, drops exactly those.
  """
  previous = sys.unraisablehook
  if getattr(previous, "flaxae_closed_loop_filter", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)

  hook.flaxae_closed_loop_filter = True
  sys.unraisablehook = hook


def abstract_like(tree: Any) -> Any:
  """``jax.ShapeDtypeStruct`` leaves (with shardings) for a tree of arrays."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
