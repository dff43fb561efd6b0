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
from flaxae.data import load_dataset
from flaxae.kernels import native
from flaxae.train.loop import train_and_evaluate
from flaxae.data.digest import data_digest
from flaxae.train.rundir import has_checkpoint

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


def _one_row_apart(tmp_path):
  """Two .npy files that differ in one byte of a training row that the resume
  digest (:func:`flaxae.data.digest.data_digest`) does not sample."""
  data = np.random.default_rng(0).integers(0, 256, (512, 8, 8), np.uint8)
  files = [tmp_path / "data0.npy", tmp_path / "data1.npy"]
  np.save(files[0], data)
  def digest(path):
    ds = load_dataset(DataConfig(name="npy", path=str(path)))
    return data_digest(ds.train_x, ds.test_x)
  for row in range(1, 512):
    other = data.copy()
    other[row, 3, 3] ^= 1
    np.save(files[1], other)
    if digest(files[1]) == digest(files[0]):
      return files
  raise AssertionError("every row is sampled")


@pytest.mark.parametrize("other,message", [
    (["--train.seed=5"], "different settings (process(es) 1 against process 0: train)"),
    (["--model.widths=16,8"], "different settings (process(es) 1 against process 0: model)"),
    ("data", "read different data (process(es) 1 against process 0"),
])
def test_processes_started_with_other_settings_or_data_are_refused(tmp_path, other, message):
  files = _one_row_apart(tmp_path)  # The same shape; one byte apart, anywhere.
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


def test_a_process_that_fails_to_start_ends_the_others_with_one_line(tmp_path):
  # Process 1's data file is missing: process 0 waited in the first collective
  # and ended ≈30 s later with a traceback from gloo.
  port = launch_module._free_port()
  extra = [[], ["--data.name=npy", f"--data.path={tmp_path / 'missing.npy'}"]]
  procs = [_worker(i, tmp_path / "mh", port, extra[i]) for i in range(2)]
  errs = [p.communicate(timeout=300)[1] for p in procs]
  assert [p.returncode for p in procs] == [2, 2], errs
  assert "missing.npy does not exist" in errs[1]
  assert "did not all reach the start-up check" in errs[0]
  assert not any("Traceback" in e for e in errs)


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


_SIGNAL_IN_START_UP = """
import os, signal, sys
from flaxae.config import Config, DistributedConfig, ModelConfig, TrainConfig
from flaxae.train import loop
num, index, port, run_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
load = loop.load_dataset
def load_and_get_a_signal(cfg):  # The last process gets SIGTERM while loading.
  if index == num - 1:
    os.kill(os.getpid(), signal.SIGTERM)
  return load(cfg)
loop.load_dataset = load_and_get_a_signal
cfg = Config(model=ModelConfig(widths=(16, 4)), train=TrainConfig(epochs=1, batch_size=64),
             run_dir=run_dir, distributed=DistributedConfig(
                 enabled=num > 1, coordinator=f"localhost:{port}", num_processes=num,
                 process_id=index))
run = loop.train_and_evaluate(cfg, progress=False)
print("stopped by", run.interrupted_by, "at step", int(run.state.steps_done))
"""


@pytest.mark.parametrize("num", [1, 2])
def test_a_signal_during_start_up_stops_before_the_first_step(tmp_path, num):
  # Multi-process, JAX's own SIGTERM handler (installed by joining the
  # runtime) logged it and the job trained on; one process: it died.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  port = str(launch_module._free_port())
  procs = [subprocess.Popen([sys.executable, "-c", _SIGNAL_IN_START_UP, str(num), str(i),
                             port, str(tmp_path / "run")], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for i in range(num)]
  for p in procs:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    assert f"stopped by {int(signal.SIGTERM)} at step 0" in out, out + err
  assert not has_checkpoint(tmp_path / "run")


def test_the_launcher_kills_workers_left_after_a_second_signal(monkeypatch):
  # Workers that ignore SIGTERM stand for ones stuck in a collective.
  monkeypatch.setattr(launch_module, "SECOND_SIGNAL_GRACE_S", 0.5)
  stuck = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
           "print(flush=True); time.sleep(60)")
  procs = [subprocess.Popen([sys.executable, "-c", stuck], stdout=subprocess.PIPE)
           for _ in range(2)]
  for p in procs:
    p.stdout.readline()  # Its handler is set.
  start = now = time.monotonic()
  with pytest.raises(subprocess.TimeoutExpired):  # One signal: they may save.
    launch_module._wait(procs, [now], timeout=1.5)
  assert launch_module._wait(procs, [now, now], timeout=20) == 128 + signal.SIGKILL
  assert time.monotonic() - start < 10


def test_the_launcher_refuses_a_negative_device_count():
  with pytest.raises(launch_module.LaunchError, match="--devices_per_process must be"):
    launch_module.launch(["train"], 2, devices_per_process=-1)
