"""The checkpoint module: a failed write is flaxae's OutputError, the last
complete checkpoint stays."""

import errno

import jax.numpy as jnp
import pytest

from flaxae.checkpoint import Checkpointer
from flaxae.errors import OutputError


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
