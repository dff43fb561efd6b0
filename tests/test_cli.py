"""The command line, end to end in subprocesses, as a user runs it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from flaxae import cli
from flaxae.train import loop
from flaxae.signals import SecondSignal


def flaxae(*args, cwd=None):
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "flaxae.cli", *args], capture_output=True,
                        text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("cli") / "run"
  out = flaxae("train", f"--run_dir={run_dir}", "--model.widths=64,32,8",
               "--train.epochs=2", "--train.batch_size=64", "--no-progress")
  assert out.returncode == 0, out.stderr
  return run_dir, out


def test_train_prints_the_run_directory(trained):
  run_dir, out = trained
  assert f"run directory: {run_dir.resolve()}" in out.stdout
  config = json.loads((run_dir / "config.json").read_text())
  assert config["model"]["widths"] == [64, 32, 8]
  assert config["train"]["epochs"] == 2
  assert (run_dir / "reconstructions.png").stat().st_size > 1000


def test_train_again_resumes_and_more_epochs_continue(trained):
  run_dir, _ = trained
  out = flaxae("train", f"--run_dir={run_dir}", "--model.widths=64,32,8",
               "--train.epochs=3", "--train.batch_size=64", "--no-progress")
  assert out.returncode == 0, out.stderr
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


def test_a_saved_config_is_the_defaults_options_override(trained, tmp_path):
  run_dir, _ = trained
  out = flaxae("train", f"--config={run_dir}", f"--run_dir={tmp_path / 'again'}",
               "--train.epochs=1", "--no-progress")
  assert out.returncode == 0, out.stderr
  saved = json.loads((run_dir / "config.json").read_text())
  again = json.loads((tmp_path / "again" / "config.json").read_text())
  assert again["model"] == saved["model"] and again["model"]["widths"] == [64, 32, 8]
  assert again["train"] == {**saved["train"], "epochs": 1}


def test_a_run_directory_as_config_is_that_run_wherever_it_is(trained, tmp_path):
  # A copy resumed the original (the folder its config.json names); a moved run
  # started again in its old place.
  from flaxae import cli  # pylint: disable=import-outside-toplevel
  run_dir, _ = trained
  shutil.copytree(run_dir, tmp_path / "copy")
  for given in (tmp_path / "copy", tmp_path / "copy" / "config.json"):
    _, commands = cli._config_file(["train", f"--config={given}"])
    assert commands["train"].keywords["cfg"].run_dir == str(tmp_path / "copy")
  (tmp_path / "template.json").write_text((run_dir / "config.json").read_text())
  _, commands = cli._config_file(["train", f"--config={tmp_path / 'template.json'}"])
  assert commands["train"].keywords["cfg"].run_dir == str(run_dir.absolute())  # Its own.


def test_a_config_file_error_names_the_file(tmp_path):
  (tmp_path / "c.json").write_text(json.dumps({"train": {"epochz": 3}}))
  out = flaxae("train", f"--config={tmp_path / 'c.json'}")
  assert out.returncode == 2 and f"{tmp_path / 'c.json'}: unknown config key" in out.stderr


def test_checkpoints_that_are_a_file_are_refused_before_training(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "checkpoints").write_text("")
  out = flaxae("train", f"--run_dir={tmp_path / 'run'}", "--no-progress")
  assert out.returncode == 2 and "is a file, not a folder of checkpoints" in out.stderr
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]


def test_a_saved_config_leaves_out_how_its_job_was_launched(trained, tmp_path):
  # A multi-process run's config.json names its coordinator and process id: taken
  # up by --config, a single process would wait for peers that never come.
  from flaxae import cli  # pylint: disable=import-outside-toplevel
  run_dir, _ = trained
  saved = json.loads((run_dir / "config.json").read_text())
  saved["distributed"] = {"enabled": True, "coordinator": "localhost:1", "num_processes": 2,
                          "process_id": 1, "cpu_collectives": "gloo"}
  (tmp_path / "mh.json").write_text(json.dumps(saved))
  rest, commands = cli._config_file(["train", f"--config={tmp_path / 'mh.json'}", "--x=1"])
  assert rest == ["train", "--x=1"]
  cfg = commands["train"].keywords["cfg"]
  assert not cfg.distributed.enabled and cfg.distributed.process_id == -1
  assert cfg.model.widths == (64, 32, 8)


def test_eval(trained, tmp_path):
  run_dir, _ = trained
  out = flaxae("eval", str(run_dir), f"--json_out={tmp_path / 'e.json'}")
  assert out.returncode == 0, out.stderr
  figures = json.loads((tmp_path / "e.json").read_text())
  assert {"loss", "bce", "mse", "psnr"} <= set(figures)
  assert "psnr" in out.stdout


def test_help_lists_options_with_defaults():
  out = flaxae("train", "--help")
  assert out.returncode == 0
  for option in ("--model.widths", "--train.epochs", "--data.name", "--train.strategy",
                 "--checkpoint.every_steps"):
    assert option in out.stdout, option
  assert "(default: 50)" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["train", "--model.kind=nope"], "unknown model.kind 'nope'"),
    (["train", "--data.name=nope"], "nope"),
    (["train", "--train.epochs=0"], "train.epochs must be positive"),
    (["eval", "/nonexistent/run"], "not a flaxae run directory"),
    (["train", "--config=/nonexistent/c.json"], "config file /nonexistent/c.json does not"),
    # Each of these ended in a traceback (the seed 2**32 trained seed 0's model).
    (["train", "--train.seed=99999999999999999999"], "train.seed must be in [0, 2**32"),
    (["train", "--train.seed=4294967295", "--train.num_seeds=2"], "with train.num_seeds=2"),
    (["train", "--distributed.enabled=True", "--distributed.coordinator=garbage"],
     "distributed.coordinator must be HOST:PORT"),
    (["train", "--run_dir=/dev/null/run"], "run directory /dev/null/run: /dev/null is a "
                                            "file, not a folder"),
])
def test_user_errors_are_one_line_and_status_2(args, message):
  out = flaxae(*args)
  assert out.returncode == 2, out.stderr
  assert message in out.stderr
  assert "Traceback" not in out.stderr


def test_wrong_type_in_an_override_is_status_2():
  out = flaxae("train", "--train.epochs=abc")
  assert out.returncode == 2
  assert "Traceback" not in out.stderr and "--train.epochs" in out.stderr


@pytest.mark.parametrize("error,status", [(KeyboardInterrupt(), 130), (SecondSignal(15), 143)])
def test_an_interruption_at_once_is_one_line_and_the_shells_status(monkeypatch, capsys,
                                                                   error, status):
  # Ctrl-C outside training, or a second signal during it (no checkpoint).
  def fit(*args, **kwargs):
    raise error
  monkeypatch.setattr(loop, "train_and_evaluate", fit)
  assert cli.main(["train", "--no-progress"]) == status
  err = capsys.readouterr().err
  assert err.startswith("flaxae: interrupted") and "Traceback" not in err


def test_eval_refuses_data_changed_since_training(tmp_path):
  # It printed figures of the new data as the run's.
  data = np.random.default_rng(0).integers(0, 256, (256, 8, 8), np.uint8)
  np.save(tmp_path / "d.npy", data)
  run_dir = tmp_path / "run"
  out = flaxae("train", f"--run_dir={run_dir}", "--data.name=npy",
               f"--data.path={tmp_path / 'd.npy'}", "--model.widths=16,4", "--train.epochs=1",
               "--train.batch_size=64", "--no-progress")
  assert out.returncode == 0, out.stderr
  assert flaxae("eval", str(run_dir)).returncode == 0
  np.save(tmp_path / "d.npy", data[::-1])
  out = flaxae("eval", str(run_dir))
  assert out.returncode == 2 and "was trained on other data" in out.stderr
  assert "its figures on this data would not be the run's" in out.stderr


def test_eval_help_names_its_arguments():
  out = flaxae("eval", "--help")
  assert "RUN_DIR" in out.stdout and "{None}" not in out.stdout
  assert "--noise SPEC" in out.stdout and "(default: auto)" in out.stdout


def test_a_damaged_checkpoint_is_one_line(trained, tmp_path):
  # TensorStore's message, then asyncio's "exception was never retrieved" dumps.
  run_dir, _ = trained
  shutil.copytree(run_dir, tmp_path / "run")
  files = [p for p in (tmp_path / "run" / "checkpoints").rglob("*") if p.is_file()
           and "state" in p.parts and "d" in p.parts]
  for path in files:
    data = bytearray(path.read_bytes())
    data[100::7] = bytes(b ^ 0xFF for b in data[100::7])
    path.write_bytes(bytes(data))
  out = flaxae("eval", str(tmp_path / "run"))
  assert out.returncode == 2, out.stderr
  error = [line for line in out.stderr.splitlines() if line.startswith("flaxae: error:")]
  assert len(error) == 1 and "cannot be read" in error[0], out.stderr
  assert "pybind11" not in out.stderr
  # TensorStore's threads printed "Event loop is closed" tracebacks as the
  # restore failed (every run on one machine, 1 in 3 on another).
  assert out.stderr.count("\n") == 1, out.stderr


def test_eval_refuses_test_data_changed_past_the_sampled_rows(tmp_path):
  # The resume digest samples 64 test rows: rows further on, or rows added, passed.
  folder = tmp_path / "idx"
  folder.mkdir()
  rng = np.random.default_rng(0)
  from flaxae.data import write_idx  # pylint: disable=import-outside-toplevel
  write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (256, 8, 8), np.uint8))
  test = rng.integers(0, 256, (200, 8, 8), np.uint8)
  write_idx(folder / "t10k-images-idx3-ubyte", test)
  run_dir = tmp_path / "run"
  out = flaxae("train", f"--run_dir={run_dir}", "--data.name=idx", f"--data.dir={folder}",
               "--model.widths=16,4", "--train.epochs=1", "--train.batch_size=64",
               "--no-progress")
  assert out.returncode == 0, out.stderr
  assert flaxae("eval", str(run_dir)).returncode == 0
  test[150] = 255
  write_idx(folder / "t10k-images-idx3-ubyte", test)
  out = flaxae("eval", str(run_dir))
  assert out.returncode == 2 and "test_digest" in out.stderr, out.stderr
  assert flaxae("eval", str(run_dir), "--noise=").returncode == 2
  # Pictures of the test set's codes, and of the training codes' statistics,
  # were drawn from the changed data as the run's.
  for picture in ("latent", "grid"):
    out = flaxae("plot", str(run_dir), picture, "-o", str(tmp_path / f"{picture}.png"))
    assert out.returncode == 2, out.stderr
    assert "its pictures" in out.stderr or "its code statistics" in out.stderr, out.stderr
    assert not (tmp_path / f"{picture}.png").exists()
