"""Multi-process training: 2 processes × 2 CPU devices (gloo) equal 1 × 4,
and a killed 2-process job resumes from its checkpoint."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import flaxae
from flaxae import launch as launch_module
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.kernels import native
from flaxae.train.loop import train_and_evaluate

from tests.train.helpers import rel_diff

ARGS = ["--model.widths=16,4", "--train.batch_size=64", "--checkpoint.every_steps=11",
        "--no-progress"]


def _launch(run_dir, epochs, port=0, extra=()):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, "-m", "flaxae.launch", "--num_processes=2",
         "--devices_per_process=2", f"--port={port}", "--", "train",
         f"--run_dir={run_dir}", f"--train.epochs={epochs}", *ARGS, *extra]
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)


def _workers(launcher):
  """The launcher's worker processes' ids, once both have started."""
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline:
    found = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True,
                           text=True, check=False).stdout.split()
    if len(found) == 2:
      return sorted(int(p) for p in found)
    time.sleep(0.05)
  raise AssertionError("the launcher did not start its 2 workers")


def _wait_for_checkpoint(run_dir, proc, timeout=240):
  ckpts = run_dir / "checkpoints"
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    done = [p for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
    if done or proc.poll() is not None:
      break
    time.sleep(0.01)
  assert proc.poll() is None, "the job ended before it could be stopped"


def _saved_steps(run_dir):
  return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def _one_process_four_devices(run_dir, epochs):
  cfg = Config(data=DataConfig(), model=ModelConfig(widths=(16, 4)),
               train=TrainConfig(epochs=epochs, batch_size=64, num_devices=4),
               checkpoint=CheckpointConfig(every_steps=11), run_dir=str(run_dir))
  return train_and_evaluate(cfg, progress=False)


@pytest.mark.devices(4)
def test_two_processes_equal_one_process(tmp_path):
  proc = _launch(tmp_path / "mh", epochs=1)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert out.count("run directory:") == 1  # Process 0 alone speaks.
  two = flaxae.load(tmp_path / "mh")
  assert int(two.state.step) == 22
  one = _one_process_four_devices(tmp_path / "sp", epochs=1)
  assert rel_diff(two.state.params, one.state.params) <= 1e-5
  lines = (tmp_path / "mh" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 1  # Written once, by process 0.


def test_seeds_split_over_two_processes_equal_their_own_runs(tmp_path):
  # 2 seeds on 2 × 2 devices: one seed group per process, each model data-parallel
  # over its process's 2 devices; the loop gathers the models to evaluate them.
  proc = _launch(tmp_path / "mh", epochs=1, extra=["--train.num_seeds=2"])
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  record = json.loads((tmp_path / "mh" / "metrics.jsonl").read_text().splitlines()[-1])
  assert len(record["test/mse_per_seed"]) == 2
  cfg = Config(data=DataConfig(), model=ModelConfig(widths=(16, 4)),
               train=TrainConfig(epochs=1, batch_size=64, num_devices=1, seed=1),
               run_dir=str(tmp_path / "alone"))
  alone = train_and_evaluate(cfg, progress=False)
  mine = flaxae.load(tmp_path / "mh", seed_index=1)
  assert rel_diff(mine.variables["params"], alone.state.params) <= 1e-5


@pytest.mark.devices(4)
def test_killed_job_resumes_from_its_checkpoint(tmp_path):
  run_dir = tmp_path / "mh"
  proc = _launch(run_dir, epochs=4)
  workers = _workers(proc)
  _wait_for_checkpoint(run_dir, proc)
  for pid in workers:  # Every process at once, as a power cut would.
    os.kill(pid, signal.SIGKILL)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  saved = _saved_steps(run_dir)
  assert saved and saved[-1] < 88
  proc = _launch(run_dir, epochs=4)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  resumed = flaxae.load(run_dir)
  assert int(resumed.state.step) == 88
  epochs = [json.loads(l)["epoch"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert epochs == [1, 2, 3, 4]
  reference = _one_process_four_devices(tmp_path / "sp", epochs=4)
  assert rel_diff(resumed.state.params, reference.state.params) <= 1e-5


@pytest.mark.devices(4)
@pytest.mark.skipif(not native.available(), reason="needs MKL and a C++ compiler")
@pytest.mark.parametrize("strategy", ["jit", "shard_map"])
def test_two_processes_with_mkl_products_equal_one_process(tmp_path, strategy):
  # Each process compiles (or loads) flaxae's MKL kernel; under jit the
  # partitioner splits its products over the processes' devices.
  proc = _launch(tmp_path / "mh", epochs=1,
                 extra=["--train.cpu_matmuls=mkl", f"--train.strategy={strategy}"])
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  two = flaxae.load(tmp_path / "mh")
  assert two.config.train.cpu_matmuls == "mkl" and int(two.state.step) == 22
  one = _one_process_four_devices(tmp_path / "sp", epochs=1)
  assert rel_diff(two.state.params, one.state.params) <= 1e-5


@pytest.mark.parametrize("to,extra", [("one worker", []), ("the launcher", []),
                                      ("one worker", ["--train.num_seeds=2"])])
def test_a_signal_stops_the_whole_job_at_one_step(tmp_path, to, extra):
  # SIGTERM to one worker only (a preemption notice to one host): the processes
  # agree after the next compiled call, both save that step and exit 143. To the
  # launcher: it passes the signal on to every worker.
  run_dir = tmp_path / "mh"
  proc = _launch(run_dir, epochs=400, extra=extra)
  workers = _workers(proc)
  _wait_for_checkpoint(run_dir, proc)
  os.kill(workers[1] if to == "one worker" else proc.pid, signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert err.count("interrupted at step") == 1  # Process 0 alone speaks.
  step = int(err.split("interrupted at step ")[1].split(";")[0])
  assert _saved_steps(run_dir)[-1] == step < 400 * 22
  assert all(subprocess.run(["kill", "-0", str(p)], capture_output=True).returncode
             for p in workers)  # No worker left behind.
  assert flaxae.load(run_dir).state.steps_done == step


def _worker(i, run_dir, port, extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "flaxae.cli", "train", f"--run_dir={run_dir}",
         "--train.epochs=1", *ARGS, "--distributed.enabled=True",
         f"--distributed.coordinator=localhost:{port}", "--distributed.num_processes=2",
         f"--distributed.process_id={i}", *extra]
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


@pytest.mark.parametrize("other,message", [
    (["--train.seed=5"], "different settings (process(es) 1 against process 0: train)"),
    (["--model.widths=16,8"], "different settings (process(es) 1 against process 0: model)"),
    ("data", "read different data (process(es) 1 against process 0"),
])
def test_processes_started_with_other_settings_or_data_are_refused(tmp_path, other, message):
  rng = np.random.default_rng(0)
  files = []
  for i in range(2):  # The same shape, other contents.
    files.append(tmp_path / f"data{i}.npy")
    np.save(files[-1], rng.integers(0, 256, (512, 8, 8), np.uint8))
  same = ["--data.name=npy", f"--data.path={files[0]}"]
  extra = [same, ["--data.name=npy", f"--data.path={files[1]}"] if other == "data"
           else same + other]
  port = launch_module._free_port()
  procs = [_worker(i, tmp_path / "mh", port, extra[i]) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err
    assert message in err and "Traceback" not in err
  assert not (tmp_path / "mh" / "checkpoints").exists()


def test_a_port_in_use_is_refused_before_any_worker_starts(capsys):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    s.listen()
    port = s.getsockname()[1]
    with pytest.raises(launch_module.LaunchError, match=f"cannot use port {port}"):
      launch_module.launch(["train"], 2, port=port)


def test_the_launchers_status_is_the_shells_for_a_killed_worker():
  assert launch_module.worst_status([0, -9]) == 137
  assert launch_module.worst_status([143, 143]) == 143
  assert launch_module.worst_status([0, 0]) == 0
