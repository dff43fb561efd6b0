"""Start N local processes of one flaxae command, wired as one distributed job.

    python -m flaxae.launch --num_processes=2 --devices_per_process=2 -- \\
        train --run_dir=runs/mh --train.batch_size=64

Each process gets ``--distributed.enabled=True`` with the coordinator
``localhost:PORT``, its id, and (on CPU) ``devices_per_process`` forced host
devices. This is for testing multi-host code on one machine; on a cluster run
one ``flaxae train --distributed.enabled=True ...`` per host instead (see the
README).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _check_port(port: int) -> None:
  """Refuses a coordinator port this machine cannot listen on (JAX would wait
  minutes for peers, then crash)."""
  if not 0 < port < 65536:
    raise LaunchError(f"--port must be in 1..65535, got {port}")
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # As the coordinator binds.
    try:
      s.bind(("localhost", port))
    except OSError as e:
      raise LaunchError(f"cannot use port {port} for the coordinator ({e.strerror}); "
                        "choose another --port, or leave it out for a free one") from None


class LaunchError(Exception):
  """A launch that cannot start."""


def _end_with_the_launcher() -> None:
  """In a worker, before it starts: SIGTERM when the launcher dies (Linux), so
  that a killed launcher leaves no job behind; the workers save and exit."""
  if sys.platform.startswith("linux"):
    import ctypes  # pylint: disable=import-outside-toplevel
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# After a worker fails, the others get this long to end by themselves (their
# collectives fail on JAX's heartbeat) before they are killed.
FAILURE_GRACE_S = 30.0
# After a second signal passed on (each worker then stops at once, without
# saving), the workers get this long to end before they are killed: one that
# stopped may wait for the others in JAX's exit-time shutdown, and they for it
# in a collective.
SECOND_SIGNAL_GRACE_S = 5.0


def launch(argv: list[str], num_processes: int, devices_per_process: int = 0,
           port: int = 0, timeout: float | None = None) -> int:
  """Runs ``flaxae <argv>`` in ``num_processes`` processes; returns the worst status.

  SIGINT and SIGTERM to the launcher are passed on to every worker (each
  saves a checkpoint at the same step and exits 130 / 143; a second signal
  ends them at once, and those left after ``SECOND_SIGNAL_GRACE_S`` are
  killed), so the job stops as one. The workers run in their own
  sessions: a terminal's Ctrl-C reaches them through the launcher, once; and
  on Linux a launcher that dies (even by SIGKILL) sends them SIGTERM.
  """
  if num_processes < 1:
    raise LaunchError(f"--num_processes must be at least 1, got {num_processes}")
  if devices_per_process < 0:
    raise LaunchError("--devices_per_process must be 0 (leave as is) or more, got "
                      f"{devices_per_process}")
  if port:
    _check_port(port)
  port = port or _free_port()
  procs: list[subprocess.Popen] = []
  signalled = []

  def forward(signum, frame):
    del frame
    signalled.append(time.monotonic())
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    for i in range(num_processes):
      env = dict(os.environ)
      if devices_per_process:
        env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} "
                            f"--xla_force_host_platform_device_count={devices_per_process}")
        env.setdefault("JAX_PLATFORMS", "cpu")
      cmd = [sys.executable, "-m", "flaxae.cli", *argv, "--distributed.enabled=True",
             f"--distributed.coordinator=localhost:{port}",
             f"--distributed.num_processes={num_processes}", f"--distributed.process_id={i}"]
      procs.append(subprocess.Popen(cmd, env=env, start_new_session=True,
                                    preexec_fn=_end_with_the_launcher))
    return _wait(procs, signalled, timeout)
  finally:
    for p in procs:  # Only after a timeout or an error of the launcher's own.
      if p.poll() is None:
        p.kill()
        p.wait()
    for sig, handler in old.items():
      signal.signal(sig, handler)


def _wait(procs: list[subprocess.Popen], signalled: list[float],
          timeout: float | None) -> int:
  """The worst exit status once every worker has ended.

  ``signalled`` holds the times of the signals passed on: after a second one
  the workers left get ``SECOND_SIGNAL_GRACE_S``. A worker that fails (not on
  a signal passed on) leaves the others ``FAILURE_GRACE_S`` to end; one that
  stopped on a signal of its own (exit 130 or 143: the others stop at the
  same step) too, in case they do not.
  """
  start, failed_at = time.monotonic(), None
  while any(p.poll() is None for p in procs):
    now = time.monotonic()
    if timeout is not None and now - start > timeout:
      raise subprocess.TimeoutExpired([p.args for p in procs], timeout)
    failed = [p for p in procs if p.poll() not in (None, 0)]
    if failed and not signalled and failed_at is None:
      failed_at = now
      code = failed[0].returncode
      why = ("stopped on a signal of its own; the others stop at the same step"
             if code in (128 + signal.SIGINT, 128 + signal.SIGTERM)
             else "failed")
      print(f"flaxae.launch: a worker exited with status {code} ({why}); those left "
            f"are killed in {FAILURE_GRACE_S:.0f} s unless they end", file=sys.stderr)
    late = (failed_at is not None and now - failed_at > FAILURE_GRACE_S) or (
        len(signalled) >= 2 and now - signalled[1] > SECOND_SIGNAL_GRACE_S)
    if late:
      for p in procs:
        if p.poll() is None:
          p.kill()
    time.sleep(0.1)
  return worst_status([p.returncode for p in procs])


def worst_status(codes: list[int]) -> int:
  """The job's exit status from its workers': a worker killed by signal n
  (Popen's -n) counts as the shell's 128 + n; the largest wins."""
  return max(128 - c if c < 0 else c for c in codes)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=0,
                      help="force this many CPU devices per process (0: leave as is)")
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("command", nargs=argparse.REMAINDER,
                      help="the flaxae command after --, e.g. -- train --run_dir=...")
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the flaxae command after --")
  try:
    return launch(command, args.num_processes, args.devices_per_process, args.port)
  except LaunchError as e:
    parser.error(str(e))


if __name__ == "__main__":
  sys.exit(main())
