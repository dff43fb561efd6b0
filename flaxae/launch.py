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
import socket
import subprocess
import sys


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(argv: list[str], num_processes: int, devices_per_process: int = 0,
           port: int = 0, timeout: float | None = None) -> int:
  """Runs ``flaxae <argv>`` in ``num_processes`` processes; returns the worst status."""
  port = port or _free_port()
  procs = []
  for i in range(num_processes):
    env = dict(os.environ)
    if devices_per_process:
      env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} "
                          f"--xla_force_host_platform_device_count={devices_per_process}")
      env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, "-m", "flaxae.cli", *argv, "--distributed.enabled=True",
           f"--distributed.coordinator=localhost:{port}",
           f"--distributed.num_processes={num_processes}", f"--distributed.process_id={i}"]
    procs.append(subprocess.Popen(cmd, env=env))
  codes = []
  try:
    for p in procs:
      codes.append(p.wait(timeout=timeout))
  except BaseException:
    for p in procs:
      p.kill()
    raise
  return max(codes, key=abs)


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
  return launch(command, args.num_processes, args.devices_per_process, args.port)


if __name__ == "__main__":
  sys.exit(main())
