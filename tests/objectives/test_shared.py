"""What every kind shares: batch positions and statistics, regularisers, config, eval."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from flaxae import config as config_lib
from flaxae import objectives
from flaxae.config import Config, ModelConfig
from flaxae.errors import ConfigError
from flaxae.models import build_model
from flaxae.objectives import BatchInfo
from flaxae.train import parallel
from flaxae.train.state import create_state
from flaxae.train.step import summarize_eval, train_step


def test_per_example_keys_follow_the_global_position():
  key = jax.random.key(0)
  whole = BatchInfo.whole(8).keys(key, 1)
  shard = BatchInfo(jnp.asarray(0), jnp.arange(4, 8), num_shards=2).keys(key, 1)
  np.testing.assert_array_equal(jax.random.key_data(whole[4:]), jax.random.key_data(shard))
  assert not np.array_equal(jax.random.key_data(BatchInfo.whole(8).keys(key, 2)),
                            jax.random.key_data(whole))  # Tags separate the streams.


@pytest.mark.devices(4)
def test_global_mean_has_the_global_gradient_on_every_shard():
  """g(mean over the global batch) under shard_map: value and averaged gradient
  equal the single-device ones, with no gradient through a collective."""
  x = jax.random.uniform(jax.random.key(0), (8, 3))
  g = lambda m: jnp.sum(jnp.log(m) * jnp.arange(1.0, 4.0))

  def loss(w, xs, axis_name=None):
    info = (BatchInfo.whole(xs.shape[0]) if axis_name is None
            else BatchInfo.shard(xs.shape[0], 0, axis_name))
    return g(info.mean(jax.nn.sigmoid(xs * w[None, :])))

  def per_device(w, xs):
    value, grad = jax.value_and_grad(loss)(w, xs, "data")
    return jax.lax.pmean((value, grad), "data")

  mesh = parallel.make_mesh(4)
  sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")),
                                  out_specs=(P(), P()), check_vma=False))
  w = jnp.array([0.5, -1.0, 2.0])
  value, grad = sharded(w, x)
  np.testing.assert_allclose(value, loss(w, x), rtol=1e-6)
  np.testing.assert_allclose(grad, jax.grad(loss)(w, x), rtol=1e-5)


def test_l1_weight_penalty_on_kernels_only_for_every_kind():
  params = {"a": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])},
            "quantizer": {"codebook": jnp.ones((2, 2))}}
  assert float(objectives.l1_weight_penalty(params)) == 3.0
  cfg = ModelConfig(kind="sparse", widths=(8,), l1_weight_penalty=1.0)
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
  model = build_model(cfg, x.shape[1:])
  tx = optax.sgd(1e-3)
  state = create_state(model, tx, x[:1], seed=0)
  after, metrics = jax.jit(functools.partial(
      train_step, model=model, objective=objectives.get("sparse"), tx=tx, cfg=cfg))(state, x)
  before = objectives.l1_weight_penalty(state.params)
  np.testing.assert_allclose(metrics["weight_l1"], before, rtol=1e-6)
  # λ = 1 outweighs the reconstruction: one step shrinks every kernel by lr·λ.
  np.testing.assert_allclose(before - objectives.l1_weight_penalty(after.params),
                             1e-3 * (8 * 64 + 8 * 64), rtol=0.05)


def test_eval_noise_defaults_to_a_denoising_models_own():
  assert objectives.eval_noise(ModelConfig(kind="denoising", noise="mask:0.3")) == "mask:0.3"
  assert objectives.eval_noise(ModelConfig(kind="plain")) == ""
  assert objectives.eval_noise(ModelConfig(kind="plain"), "gaussian:0.5") == "gaussian:0.5"
  assert objectives.eval_noise(ModelConfig(kind="denoising"), "none") == ""
  with pytest.raises(ConfigError, match="unknown noise"):
    objectives.eval_noise(ModelConfig(), "speckle:1")


def test_summaries_give_psnr_and_the_kinds_numbers():
  means = {"loss": 0.2, "mse": 0.01, "noisy_mse": 0.1, "denoised_mse": 0.02,
           "code_usage": np.array([0.5, 0.5, 0.0, 0.0])}
  out = summarize_eval(means, ModelConfig(kind="vq", codebook_size=4))
  np.testing.assert_allclose([out["psnr"], out["noisy_psnr"]], [20.0, 10.0], rtol=1e-6)
  np.testing.assert_allclose(out["perplexity"], 2.0, rtol=1e-6)
  assert out["codes_used"] == 0.5 and "code_usage" not in out
  assert all(isinstance(v, float) for v in out.values())


@pytest.mark.parametrize("field,value,message", [
    ("dropout", 1.0, "model.dropout must be in"),
    ("sparsity_target", 0.0, "model.sparsity_target must be in"),
    ("ema_decay", 1.0, "model.ema_decay must be in"),
    ("logvar_min", 20.0, "must be smaller than model.logvar_max"),
    ("codebook_size", 0, "model.codebook_size must be positive"),
    ("iwae_samples", 0, "model.iwae_samples must be positive"),
    ("beta", -1.0, "model.beta must not be negative"),
    ("contractive_weight", -1.0, "model.contractive_weight must not be negative"),
    ("noise", "blur:2", "unknown noise"),
    ("code_activation", "relu", "needs a code in"),  # kind=sparse, sparsity=kl.
])
def test_validate_family_fields(field, value, message):
  model = dataclasses.replace(ModelConfig(kind="sparse"), **{field: value})
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(Config(model=model))
