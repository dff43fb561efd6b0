"""Multi-process training: 2 processes × 2 CPU devices (gloo) equal 1 × 4,
and a killed 2-process job resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import flaxae
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
  ckpts = run_dir / "checkpoints"
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline:
    done = [p for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
    if done or proc.poll() is not None:
      break
    time.sleep(0.01)
  assert proc.poll() is None, "the job ended before it could be killed"
  os.killpg(proc.pid, signal.SIGKILL)  # The launcher and both workers.
  proc.wait()
  saved = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
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
