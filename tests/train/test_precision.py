"""Mixed precision: bfloat16 compute, float32 parameters, same quality."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.models import build_model
from flaxae.train.loop import train_and_evaluate


@pytest.mark.parametrize("model_cfg,shape", [
    (ModelConfig(arch="dense", widths=(16, 4)), (8, 8, 1)),
    (ModelConfig(arch="conv", channels=(4, 8), latent_dim=3), (8, 8, 1)),
    (ModelConfig(arch="dense", kind="vae", widths=(16, 4)), (8, 8, 1)),
])
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_at_the_edges(model_cfg, shape):
  model = build_model(model_cfg, shape, dtype="bfloat16")
  x = jnp.ones((2, *shape), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  chex.assert_trees_all_equal_dtypes(
      variables["params"], jax.tree.map(lambda p: p.astype(jnp.float32),
                                        variables["params"]))
  assert model.apply(variables, x).dtype == jnp.float32
  assert model.apply(variables, x, method="encode").dtype == jnp.float32
  jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables))
  dots = [line for line in jaxpr.splitlines() if "dot_general" in line]
  assert dots and all("bf16" in line for line in dots), dots


def _fit(tmp_path, dtype):
  cfg = Config(data=DataConfig(name="digits"), model=ModelConfig(widths=(64, 16)),
               train=TrainConfig(epochs=8, batch_size=64, learning_rate=3e-3,
                                 compute_dtype=dtype),
               checkpoint=CheckpointConfig(every_steps=10**6, keep=1),
               run_dir=str(tmp_path / dtype))
  return train_and_evaluate(cfg, progress=False)


def test_bfloat16_training_matches_float32_quality(tmp_path):
  f32, bf16 = _fit(tmp_path, "float32"), _fit(tmp_path, "bfloat16")
  chex.assert_trees_all_equal_dtypes(bf16.variables, f32.variables)  # float32 params.
  loss32, loss16 = f32.history[-1]["test/bce"], bf16.history[-1]["test/bce"]
  assert f32.history[0]["test/bce"] - loss32 > 0.05  # Both learnt something...
  assert abs(loss16 - loss32) / loss32 < 0.02, (loss16, loss32)  # ...equally well.
  assert not np.array_equal(jax.tree.leaves(f32.variables)[0],
                            jax.tree.leaves(bf16.variables)[0])  # Really bf16.
