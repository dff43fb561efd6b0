"""SIGINT and SIGTERM as a request to stop at the next compiled call's end.

A run takes both signals over for its whole length, from the moment it has
joined the distributed runtime (whose own SIGTERM handler, JAX's preemption
notifier, would otherwise log the signal and train on) to its end. The loop
asks :meth:`StopRequest.agreed` before its first compiled call and after
each: a signal that came during start-up (loading the data, compiling) stops
the run before it trains, one that came later after the current call, with
a checkpoint.
"""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class SecondSignal(KeyboardInterrupt):
  """A second SIGINT/SIGTERM during a run: it ends at once, without saving
  (a save already under way may still complete)."""

  def __init__(self, signum: int):
    super().__init__(f"signal {signum} again: stopped at once; the same command resumes "
                     "from the last complete checkpoint")
    self.signum = signum


class StopRequest:
  """A context in which SIGINT/SIGTERM set a flag instead of ending the process.

  In a job of several processes a signal may reach them at different moments
  (a preemption notice to one host, a Ctrl-C relayed late): they stop at the
  first compiled call after which any of them has one (:meth:`agreed`), so
  that all save the same step and none waits in a collective for the others.
  A second signal to one process raises :class:`SecondSignal` (a
  ``KeyboardInterrupt``) there at once.
  Outside the main thread (where Python allows no handlers) signals are left
  alone.
  """

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # Second signal: give up at once.
      raise SecondSignal(signum)
    self.signum = signum

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)

  def agreed(self) -> int | None:
    """The signal this process or any other of the job has received (the
    same answer on every process: a collective when there are several, which
    every process must call at the same point)."""
    signum = self.signum or 0
    if jax.process_count() > 1:
      signum = int(np.max(multihost_utils.process_allgather(np.int32(signum))))
    return signum or None
