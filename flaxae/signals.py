"""SIGINT and SIGTERM as a request to stop at the next compiled call's end.

A run takes both signals over for its whole length: ``flaxae train`` from
its first moment (before JAX is imported: a signal that Python's default
handler turns into a ``KeyboardInterrupt`` inside a garbage-collection
callback of XLA's is printed and lost), and again once it has joined the
distributed runtime (whose own SIGTERM handler, JAX's preemption notifier,
would otherwise log the signal and train on). The loop asks
:meth:`StopRequest.agreed` before its first compiled call and after each: a
signal that came during start-up (loading the data, compiling) stops the run
before it trains, one that came later after the current call, with a
checkpoint.

Standard library only at import: the command line installs it before JAX loads.
"""

from __future__ import annotations

import os
import signal
import sys


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

  A second signal ends the run at once: with ``exit_on_second`` (the command
  line) the process exits with 128 + the signal's number after one line on
  stderr, wherever it is (a raised exception could land in a callback that
  swallows it, or leave a process of a job waiting in a collective); else
  :class:`SecondSignal` (a ``KeyboardInterrupt``) is raised, as a Python
  session expects. Entered again (after JAX installed its own handler), it
  takes the signals over again; each exit puts back what its enter found.
  Outside the main thread (where Python allows no handlers) signals are left
  alone.
  """

  def __init__(self, exit_on_second: bool = False):
    self.signum = None
    self.exit_on_second = exit_on_second
    self._saved: list[dict[int, object]] = []

  def __enter__(self) -> "StopRequest":
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread.
        pass
    self._saved.append(old)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      self.signum = signum
      return
    if self.exit_on_second:
      second = SecondSignal(signum)
      os.write(sys.stderr.fileno(), f"flaxae: interrupted ({second})\n".encode())
      os._exit(128 + signum)  # pylint: disable=protected-access
    raise SecondSignal(signum)

  def __exit__(self, *exc):
    for sig, old in self._saved.pop().items():
      signal.signal(sig, old)

  def agreed(self) -> int | None:
    """The signal this process or any other of the job has received (the
    same answer on every process: a collective when there are several, which
    every process must call at the same point)."""
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    signum = self.signum or 0
    if jax.process_count() > 1:
      signum = int(np.max(multihost_utils.process_allgather(np.int32(signum))))
    return signum or None
