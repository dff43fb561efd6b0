"""The checkpoint module: a failed write is flaxae's OutputError, the last
complete checkpoint stays; a damaged or mismatched checkpoint is refused."""

import errno
import json
import shutil
import sys
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import pytest

import flaxae
from flaxae.checkpoint import Checkpointer, abstract_like
from flaxae.config import Config, ModelConfig, TrainConfig
from flaxae.errors import CheckpointError, OutputError


def _state(x):
  return {"w": jnp.full((4,), x, jnp.float32)}


def test_a_full_disk_is_an_output_error_and_the_last_checkpoint_stays(tmp_path, monkeypatch):
  ckpt = Checkpointer(tmp_path / "c")
  ckpt.save(1, _state(1.0), {"step": 1})
  ckpt.wait()

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ckpt._manager, "save", full)
  with pytest.raises(OutputError, match=r"cannot write a checkpoint in .*No space left"):
    ckpt.save(2, _state(2.0), {"step": 2})
  monkeypatch.setattr(ckpt._manager, "wait_until_finished", full)
  with pytest.raises(OutputError, match="free space"):
    ckpt.close()
  again = Checkpointer(tmp_path / "c", read_only=True)
  assert again.all_steps() == [1]
  state, meta = again.restore(_state(0.0))
  assert float(state["w"][0]) == 1.0 and meta["step"] == 1
  again.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("ckpt") / "run"
  flaxae.fit(Config(model=ModelConfig(widths=(16, 4)),
                    train=TrainConfig(epochs=1, batch_size=64), run_dir=str(folder)),
             progress=False)
  return folder


def _copy(run_dir, tmp_path):
  shutil.copytree(run_dir, tmp_path / "run")
  return tmp_path / "run"


@pytest.mark.parametrize("section,edit,field", [
    ("model", dict(activation="tanh"), "model.activation"),  # Loaded silently.
    ("model", dict(widths=[16, 8]), "model.widths"),  # "Cannot be read; delete that step".
    ("train", dict(num_seeds=3), "train.num_seeds"),  # The same.
    ("train", dict(compute_dtype="bfloat16"), "train.compute_dtype"),  # Loaded silently.
])
def test_an_edited_config_is_refused_naming_the_field(run_dir, tmp_path, section, edit, field):
  run = _copy(run_dir, tmp_path)
  config = json.loads((run / "config.json").read_text())
  config[section].update(edit)
  (run / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match=f"does not describe the run its checkpoint "
                                            f"holds \\({field}"):
    flaxae.load(run)


def test_more_epochs_are_not_an_edit(run_dir, tmp_path):
  run = _copy(run_dir, tmp_path)
  config = json.loads((run / "config.json").read_text())
  config["train"]["epochs"] += 1  # As a resume with more epochs writes it.
  (run / "config.json").write_text(json.dumps(config))
  assert flaxae.load(run).state.steps_done > 0


def test_damaged_parameters_are_refused_not_loaded(run_dir, tmp_path):
  # Flipped bytes in a checkpoint's data gave NaN weights, NaN codes, exit 0.
  run = _copy(run_dir, tmp_path)
  good = flaxae.load(run)
  ckpt = Checkpointer(run / "checkpoints")
  step = ckpt.latest_step()
  _, meta = ckpt.restore(abstract_like(good.state))
  bad = good.state.replace(params=jax.tree.map(lambda x: x.at[0].set(jnp.nan),
                                               good.state.params))
  ckpt.save(step + 1, bad, {**meta, "step": step + 1})
  ckpt.close()
  with pytest.raises(CheckpointError, match=f"checkpoint {step + 1} .* holds NaN or Inf"):
    flaxae.load(run)
  assert flaxae.load(run, step=step).state.steps_done == step


def test_a_damaged_checkpoint_reports_nothing_else(run_dir, tmp_path, monkeypatch):
  # Reads still in flight after the first failed one ended in dozens of
  # "Event loop is closed" errors of TensorStore's threads (printed by
  # sys.unraisablehook), during the failed restore and after load had raised.
  run = _copy(run_dir, tmp_path)
  for path in (run / "checkpoints").rglob("*"):
    if path.is_file() and "state" in path.parts and "d" in path.parts:
      data = bytearray(path.read_bytes())
      data[100::7] = bytes(b ^ 0xFF for b in data[100::7])
      path.write_bytes(bytes(data))
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  with pytest.raises(CheckpointError, match="cannot be read"):
    flaxae.load(run)
  time.sleep(2.0)
  assert not [u for u in reported if "Event loop is closed" in str(u.exc_value)]
  # Any other unraisable error still reaches the hook in place.
  sys.unraisablehook(SimpleNamespace(exc_value=ValueError("other")))
  assert [str(u.exc_value) for u in reported] == ["other"]


@pytest.mark.parametrize("step", ["22", 2.0, True])
def test_a_step_that_is_not_an_integer_is_refused(run_dir, step):
  with pytest.raises(CheckpointError, match="a checkpoint's step is an integer"):
    flaxae.load(run_dir, step=step)
