"""VQ: straight-through gradients, EMA updates and restarts as written; codes in use."""

import jax
import jax.numpy as jnp
import numpy as np

from flaxae.config import ModelConfig
from flaxae.models import build_model, ema_codebook
from flaxae.objectives import BatchInfo, vq

from tests.objectives.helpers import Trainer, digits

X = jnp.asarray(digits()[0][:32])


def _model(**kw):
  cfg = ModelConfig(kind="vq", widths=(16, 8), codebook_size=8, codebook_dim=2, **kw)
  model = build_model(cfg, X.shape[1:])
  return cfg, model, model.init(jax.random.key(0), X)


def _grads(cfg, model, variables):
  loss = lambda p: vq.vq(model, {**variables, "params": p}, X, jax.random.key(1), cfg).loss
  return jax.jit(jax.grad(loss))(variables["params"])


def test_straight_through_gradients_reach_the_encoder():
  cfg, model, variables = _model(commitment=0.0)  # Only the reconstruction's gradient.
  for leaf in jax.tree.leaves(_grads(cfg, model, variables)["encoder"]):
    assert float(jnp.abs(leaf).max()) > 0


def test_gradient_codebook_is_learned_by_its_own_loss():
  cfg, model, variables = _model(vq_ema=False)
  assert "vq" not in variables
  out = vq.vq(model, variables, X, jax.random.key(1), cfg)
  assert "codebook_loss" in out.metrics and not out.model_state
  assert float(jnp.abs(_grads(cfg, model, variables)["quantizer"]["codebook"]).max()) > 0


def test_encode_gives_code_vectors_and_decode_reconstructs():
  _, model, variables = _model()
  z = model.apply(variables, X, method="encode")
  idx = model.apply(variables, X, method="indices")
  codebook = ema_codebook(**{k if k == "count" else "total": v for k, v in
                             variables["vq"]["quantizer"].items()})
  np.testing.assert_allclose(z.reshape(32, 4, 2), codebook[idx], rtol=1e-6)
  np.testing.assert_allclose(model.apply(variables, z, method="decode"),
                             model.apply(variables, X), rtol=1e-5, atol=1e-6)


def test_ema_codebook_keeps_rarely_used_codes_at_their_centroids():
  # Smoothing keeps unused codes finite without pulling used ones towards 0
  # (1e-5 on shares put a code with 1e-3 of the assignments at 0.991 of its
  # centroid, one at the restart threshold at 0.96).
  k = 128
  centroid = np.array([0.5, -2.0, 1.0])
  count = np.full((k,), (1.0 - 1e-4 - 2.3e-4) / (k - 3), np.float32)
  count[0], count[1], count[2] = 1e-4, 2.3e-4, 0.0  # code 2: never used
  total = count[:, None] * centroid
  codebook = np.asarray(ema_codebook(jnp.asarray(count), jnp.asarray(total)))
  np.testing.assert_allclose(codebook[:2], np.stack([centroid] * 2), rtol=1e-5)
  assert np.isfinite(codebook).all() and not codebook[2].any()


def test_ema_update_and_restart_as_written():
  cfg = ModelConfig(kind="vq", codebook_size=3, ema_decay=0.9, dead_code_restart=0.5)
  z_e = jnp.array([[[1.0, 0.0]], [[3.0, 0.0]], [[0.0, 2.0]], [[5.0, 5.0]]])  # (B=4, 1, D=2)
  idx = jnp.array([[0], [0], [1], [1]])
  state = {"count": jnp.array([0.5, 0.4, 0.1]), "sum": jnp.ones((3, 2))}
  info = BatchInfo.whole(4)
  new, restarts = jax.jit(lambda s, z, i: vq.ema_update(
      s, z, i, jax.random.key(0), cfg, info))(state, z_e, idx)
  count = 0.9 * np.array([0.5, 0.4, 0.1]) + 0.1 * np.array([0.5, 0.5, 0.0])
  sums = np.array([[4.0, 0.0], [5.0, 7.0], [0.0, 0.0]]) / 4
  np.testing.assert_allclose(new["count"][:2], count[:2], rtol=1e-6)
  np.testing.assert_allclose(new["sum"][:2], 0.9 + 0.1 * sums[:2], rtol=1e-6)
  # Code 2's usage 0.09 < 0.5/3: restarted at one of the batch's vectors.
  assert float(restarts) == 1.0
  np.testing.assert_allclose(new["count"][2], 1 / 3, rtol=1e-6)
  fresh = ema_codebook(new["count"], new["sum"])[2]
  assert any(np.allclose(fresh, v, rtol=1e-4) for v in np.asarray(z_e[:, 0]))


def test_codes_are_used_after_training():
  model = ModelConfig(kind="vq", widths=(64, 16), codebook_size=32, codebook_dim=4)
  figures = Trainer(model, digits()[0]).epochs(5).figures(digits()[1])
  assert figures["perplexity"] > 4
  assert figures["codes_used"] > 4 / 32
  assert figures["bits_per_code"] == 5.0
  assert "code_usage" not in figures
