"""Compilation in a run: JAX's persistent cache, set for the run and put back
after, and a clock of the time spent compiling (kept out of throughput)."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_compilation_cache

from flaxae.errors import ConfigError


@contextlib.contextmanager
def compilation_cache(folder: str) -> Iterator[None]:
  """Keeps the programs compiled inside in ``folder`` (JAX's persistent
  compilation cache), and puts the process's own setting back after.

  A later process that compiles the same program (a resumed run, the same
  config again, another seed of the same shapes) loads it instead: XLA:GPU's
  compilation of a fused epoch took 15-18 s on an H100; the conv AE's 2 s on
  a 2-core CPU became 0.4 s. Programs that compiled in
  under ``jax_persistent_cache_min_compile_time_secs`` (JAX's default: 1 s)
  are not kept. An empty ``folder`` changes nothing.
  """
  path = os.path.abspath(os.path.expanduser(folder)) if folder else None
  if path is not None and os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"compilation_cache {folder!r} is a file, not a folder")
  old = jax.config.jax_compilation_cache_dir
  if path is None or path == old:
    yield
    return
  # JAX opens its cache once, at the first compilation that uses it: reset
  # it, so that it opens the folder set now, and again the old one after.
  jax_compilation_cache.reset_cache()
  jax.config.update("jax_compilation_cache_dir", path)
  try:
    yield
  finally:
    jax_compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", old)


class CompileClock:
  """Seconds this process spends tracing, lowering and compiling while it is
  open (JAX's compile events), so that a run's throughput leaves them out: the
  first epoch, and the first after a resume, compile the training chunk."""

  _EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
             "/jax/core/compile/jaxpr_to_mlir_module_duration",
             "/jax/core/compile/backend_compile_duration")

  def __init__(self):
    self.seconds = 0.0

  def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
    del kwargs
    if event in self._EVENTS:
      self.seconds += duration

  def __enter__(self) -> "CompileClock":
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listen)
