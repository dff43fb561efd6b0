"""flaxae's MKL matrix product (an XLA FFI kernel on CPU) against XLA's own."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import flaxae
from flaxae import kernels
from flaxae.config import Config, ModelConfig, TrainConfig
from flaxae.errors import ConfigError, KernelError
from flaxae.kernels import native
from flaxae.models import build_model
from flaxae.train.build import setup
from flaxae.train.loop import train_and_evaluate

from tests.train.helpers import rel_diff, trained_state


pytestmark = [
    pytest.mark.skipif(not native.available(),
                       reason="needs MKL (pip install 'flaxae[mkl]') and a C++ compiler"),
    pytest.mark.skipif(jax.default_backend() != "cpu",
                       reason="the kernel is CPU's (other backends use XLA's products)")]
DATA = np.random.default_rng(0).random((320, 8, 8, 1), dtype=np.float32)


def _random(shape, seed):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.parametrize("m,k,n", [(256, 784, 64), (300, 70, 45), (17, 5, 200), (1, 1, 1),
                                   (33, 16, 33), (64, 64, 16)])
def test_products_and_gradients_equal_xla(m, k, n):
  a, b = _random((m, k), 0), _random((k, n), 1)
  np.testing.assert_allclose(jax.jit(kernels.matmul)(a, b), a @ b, rtol=2e-5, atol=2e-5 * k)
  loss = lambda mm: lambda a, b: jnp.sum(jnp.sin(mm(a, b)))
  ours = jax.jit(jax.grad(loss(kernels.matmul), (0, 1)))(a, b)
  xla = jax.grad(loss(jnp.matmul), (0, 1))(a, b)
  for got, want, size in zip(ours, xla, (n, m)):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * size)


def test_the_products_are_the_kernel_and_repeat_bit_for_bit():
  a, b = _random((96, 40), 2), _random((40, 24), 3)
  step = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(kernels.matmul(a, b) ** 2), (0, 1)))
  # Forward, and both gradient products: three calls of the kernel, no dot.
  hlo = step.lower(a, b).compile().as_text()
  assert hlo.count(f'custom_call_target="{native.TARGET}"') == 3 and " dot(" not in hlo
  first, again = step(a, b), step(a, b)
  jax.tree.map(np.testing.assert_array_equal, first, again)


@pytest.mark.parametrize("m,n", [(200, 150), (150, 200)], ids=["rows", "columns"])
def test_parts_split_rows_or_columns_the_same_way(m, n):
  # Splitting over XLA's threads (rows when m >= n, else columns) must not
  # change a value, with either operand transposed.
  a, b = _random((m, 30), 4), _random((30, n), 5)

  def call(parts, trans_a, trans_b):
    return jax.ffi.ffi_call(native.TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32))(
        a.T if trans_a else a, b.T if trans_b else b, trans_a=trans_a, trans_b=trans_b,
        parts=np.int64(parts))

  native.register()
  one = np.asarray(jax.jit(lambda: call(1, False, False))())
  np.testing.assert_allclose(one, a @ b, rtol=2e-5, atol=1e-3)
  for parts in (2, 3, 7):
    for trans_a in (False, True):
      for trans_b in (False, True):
        got = jax.jit(lambda: call(parts, trans_a, trans_b))()
        np.testing.assert_allclose(got, one, rtol=1e-6, atol=1e-5)


def test_batched_and_empty_products():
  a, b = _random((3, 40, 20), 6), _random((3, 20, 33), 7)
  np.testing.assert_allclose(jax.jit(jax.vmap(kernels.matmul))(a, b), a @ b, rtol=2e-5,
                             atol=1e-4)
  assert kernels.matmul(jnp.zeros((0, 5)), jnp.zeros((5, 3))).shape == (0, 3)
  np.testing.assert_array_equal(kernels.matmul(jnp.ones((4, 0)), jnp.ones((0, 3))),
                                np.zeros((4, 3)))
  with pytest.raises(ValueError, match="float32 only"):
    kernels.matmul(a[0].astype(jnp.bfloat16), b[0])


@pytest.mark.parametrize("cfg", [
    ModelConfig(arch="dense", widths=(32, 8)),
    # Both conv forms (input side; output side for the 8→1 logits), transposed
    # convolutions and the dense code and grid layers.
    ModelConfig(arch="conv", channels=(4, 8), latent_dim=6),
    ModelConfig(kind="vae", arch="conv", channels=(4, 8), latent_dim=0)],
                         ids=["dense", "conv", "conv-vae"])
def test_a_model_built_with_mkl_matmuls_is_the_same_function(cfg):
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
  xla, mkl = build_model(cfg, (8, 8, 1)), build_model(cfg, (8, 8, 1), matmuls="mkl")
  params = xla.init(jax.random.key(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(mkl.init(jax.random.key(1), x))
  call = lambda model: lambda p: model.apply(p, x) if cfg.kind != "vae" else model.apply(
      p, x, method=model.encode)
  np.testing.assert_allclose(jax.jit(call(mkl))(params), call(xla)(params), rtol=1e-5,
                             atol=1e-5)
  loss = lambda model: lambda p: jnp.sum(jnp.sin(jax.tree.leaves(call(model)(p))[0]))
  ours, want = jax.jit(jax.grad(loss(mkl)))(params), jax.grad(loss(xla))(params)
  assert rel_diff(ours, want) <= 1e-5
  hlo = jax.jit(jax.grad(loss(mkl))).lower(params).compile().as_text()
  assert native.TARGET in hlo and " dot(" not in hlo  # Every product is the kernel's.


@pytest.fixture(scope="module")
def xla_trained():
  return trained_state(DATA, num_devices=1, steps=20)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_second_order_gradients_equal_xla(trans_a, trans_b):
  # jax.grad through a vjp (what a contractive AE's penalty does), for every
  # pair of transposes the gradients use.
  a, b = _random((24, 40), 0), _random((24 if trans_a else 40, 16), 1)
  if trans_b:
    b = _random((16, 24 if trans_a else 40), 1)

  def penalty(a, b, matmuls):
    f = lambda a: jnp.tanh(kernels.product(a, b, matmuls, trans_a=trans_a, trans_b=trans_b))
    out, vjp = jax.vjp(f, a)
    return jnp.sum(jnp.square(vjp(jnp.ones_like(out))[0]))

  grads = jax.jit(jax.grad(penalty, (0, 1)), static_argnums=2)
  for got, want in zip(grads(a, b, "mkl"), grads(a, b, "xla")):
    # Both are within 3e-6 of the float64 value relative to the largest entry.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("model", [
    ModelConfig(kind="contractive", widths=(32, 8), jacobian="exact"),
    ModelConfig(kind="contractive", widths=(96,), code_activation="sigmoid",
                jacobian="exact"),  # Overcomplete: reverse mode where XLA's go forward.
    ModelConfig(kind="contractive", widths=(32, 8), jacobian="hutchinson"),
    ModelConfig(kind="contractive", arch="conv", channels=(4, 8), latent_dim=6,
                jacobian="exact")],
    ids=["exact", "exact-overcomplete", "hutchinson", "conv"])
def test_a_contractive_ae_trains_with_mkl_as_with_xla(model):
  def run(cpu_matmuls):
    train = TrainConfig(num_devices=1, batch_size=32, epochs=4, cpu_matmuls=cpu_matmuls)
    return trained_state(DATA, steps=4, train=train, model=model)

  assert rel_diff(run("mkl").params, run("xla").params) <= 1e-5


@pytest.mark.parametrize("model", [
    ModelConfig(widths=(32, 8)),
    # The conv AE on CPU runs micro-batches of 16 (two per step here).
    ModelConfig(arch="conv", channels=(4, 8), latent_dim=6)], ids=["dense", "conv"])
def test_training_with_mkl_matmuls_equals_xla(model):
  def run(cpu_matmuls):
    train = TrainConfig(num_devices=1, batch_size=32, epochs=20, cpu_matmuls=cpu_matmuls)
    return trained_state(DATA, steps=20, train=train, model=model)

  mkl = run("mkl")
  assert rel_diff(mkl.params, run("xla").params) <= 1e-5
  jax.tree.map(np.testing.assert_array_equal, run("mkl").params,
               mkl.params)  # The same bits again.


@pytest.mark.devices(4)
@pytest.mark.parametrize("strategy", ["jit", "shard_map"])
def test_four_devices_train_with_mkl_as_one_with_xla(strategy, xla_trained):
  # jit: the partitioner splits each product like XLA's dot (the weight
  # gradients summed over the devices); shard_map: each device its own.
  train = TrainConfig(num_devices=4, batch_size=32, epochs=20, cpu_matmuls="mkl",
                      strategy=strategy)
  assert rel_diff(trained_state(DATA, steps=20, train=train).params,
                  xla_trained.params) <= 1e-5


@pytest.mark.devices(4)
def test_a_seed_group_split_over_devices_needs_the_shard_map_strategy():
  train = TrainConfig(num_devices=4, batch_size=32, num_seeds=2, cpu_matmuls="mkl")
  with pytest.raises(ConfigError, match="strategy=shard_map"):
    setup(Config(model=ModelConfig(widths=(32, 8)), train=train), DATA.shape[1:], len(DATA))


@pytest.mark.devices(4)
def test_a_four_device_run_with_mkl_trains_and_evaluates(tmp_path):
  # Training per device (shard_map), evaluation split over the devices (jit):
  # the run completes and its figures are the ones a run with XLA's products
  # reports.
  def run(cpu_matmuls):
    cfg = Config(model=ModelConfig(widths=(16, 4)),
                 train=TrainConfig(epochs=1, batch_size=64, num_devices=4,
                                   strategy="shard_map", cpu_matmuls=cpu_matmuls),
                 run_dir=str(tmp_path / cpu_matmuls))
    return train_and_evaluate(cfg, progress=False)

  mkl, xla = run("mkl"), run("xla")
  assert rel_diff(mkl.state.params, xla.state.params) <= 1e-5
  assert mkl.history[-1]["test/loss"] == pytest.approx(xla.history[-1]["test/loss"], rel=1e-5)


def test_missing_mkl_or_compiler_is_a_clear_error(monkeypatch, tmp_path):
  monkeypatch.setenv("FLAXAE_MKL", str(tmp_path / "libmkl_rt.so"))
  with pytest.raises(KernelError, match="FLAXAE_MKL=.* is not a file"):
    native.find_mkl()
  monkeypatch.setenv("CXX", "no-such-c++")
  with pytest.raises(KernelError, match="no C\\+\\+ compiler 'no-such-c\\+\\+'"):
    native.build()


def test_the_cli_reports_a_missing_mkl_in_one_line(tmp_path):
  env = {**os.environ, "FLAXAE_MKL": str(tmp_path / "nothing.so")}
  done = subprocess.run(
      [sys.executable, "-m", "flaxae.cli", "train", "--train.cpu_matmuls=mkl",
       "--train.epochs=1", "--train.num_devices=1", f"--run_dir={tmp_path / 'run'}"],
      capture_output=True, text=True, env=env, timeout=300)
  assert done.returncode == 2, done.stderr
  assert "FLAXAE_MKL=" in done.stderr and "Traceback" not in done.stderr


def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  monkeypatch.setenv("FLAXAE_CACHE_DIR", str(blocker))
  with pytest.raises(KernelError, match="set FLAXAE_CACHE_DIR to a writable folder"):
    native.build()


def test_the_kernel_builds_once_per_version(tmp_path, monkeypatch):
  monkeypatch.setenv("FLAXAE_CACHE_DIR", str(tmp_path))
  first = native.build()
  stamp = first.stat().st_mtime_ns
  assert native.build() == first and first.stat().st_mtime_ns == stamp
  assert first.parent == tmp_path / "kernels" and list(first.parent.iterdir()) == [first]


@pytest.mark.parametrize("seeds_vmapped", [1, 2])
def test_many_seeds_in_one_program_through_mkl(seeds_vmapped):
  # Seeds one at a time (lax.map) or vmapped (the kernel's batching: one call
  # per model) on one device, against the same program with XLA's products.
  def run(cpu_matmuls):
    train = TrainConfig(num_devices=1, batch_size=32, epochs=10, num_seeds=2,
                        seeds_vmapped=seeds_vmapped, cpu_matmuls=cpu_matmuls)
    return trained_state(DATA, steps=10, train=train)

  mkl, xla = run("mkl"), run("xla")
  assert mkl.params["encoder"]["code"]["kernel"].shape[0] == 2
  assert rel_diff(mkl.params, xla.params) <= 1e-5


def test_a_run_trained_with_mkl_loads_with_xla_products(tmp_path):
  cfg = Config(model=ModelConfig(widths=(16, 4)),
               train=TrainConfig(epochs=1, batch_size=64, num_devices=1, cpu_matmuls="mkl"),
               run_dir=str(tmp_path / "run"))
  trained = train_and_evaluate(cfg, progress=False)
  run = flaxae.load(tmp_path / "run")
  assert run.config.train.cpu_matmuls == "mkl" and run.model.matmuls == "xla"
  images = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
  mkl_model = build_model(cfg.model, (8, 8, 1), matmuls="mkl")
  np.testing.assert_allclose(
      run.encode(images),
      mkl_model.apply({"params": trained.state.params}, images, method=mkl_model.encode),
      rtol=1e-5, atol=1e-5)
  # Or, asked for, with MKL's (any run: the parameters are the same).
  fast = flaxae.load(tmp_path / "run", cpu_matmuls="mkl")
  assert fast.model.matmuls == "mkl"
  np.testing.assert_allclose(fast.reconstruct(images), run.reconstruct(images), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ConfigError, match="cpu_matmuls must be one of"):
    flaxae.load(tmp_path / "run", cpu_matmuls="eigen")


def _loss(w, x):
  return jnp.sum(jnp.tanh(kernels.matmul(x, w)) ** 2)


@pytest.mark.devices(4)
@pytest.mark.parametrize("w_spec,x_spec", [
    (P(), P("data")),            # data parallel: a weight gradient summed over devices
    (P(None, "data"), P()),      # the layer's outputs split
    (P("data", None), P(None, "data"))],  # the contracting axis split
    ids=["batch", "outputs", "contracting"])
def test_sharded_jit_programs_split_the_products_without_gathers(w_spec, x_spec):
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  w, x = _random((32, 16), 0), _random((64, 32), 1) * 0.3
  grads = jax.jit(jax.value_and_grad(_loss, (0, 1)))
  value, (gw, gx) = grads(jax.device_put(w, NamedSharding(mesh, w_spec)),
                          jax.device_put(x, NamedSharding(mesh, x_spec)))
  ref_value, (ref_gw, ref_gx) = jax.value_and_grad(_loss, (0, 1))(w, x)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(gw, ref_gw, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gx, ref_gx, rtol=1e-5, atol=1e-5)
  hlo = grads.lower(jax.device_put(w, NamedSharding(mesh, w_spec)),
                    jax.device_put(x, NamedSharding(mesh, x_spec))).compile().as_text()
  assert "all-gather" not in hlo and " dot(" not in hlo
  assert hlo.count(f'custom_call_target="{native.TARGET}"') == 3


@pytest.mark.devices(4)
def test_conflicting_and_two_axis_shardings_multiply_right():
  # Rows of x and columns of w split along one axis (one of them is then
  # gathered), and operands split along two mesh axes at once.
  w, x = _random((32, 16), 0), _random((64, 32), 1)
  product = jax.jit(kernels.matmul)
  one = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  two = jax.make_mesh((2, 2), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  for mesh, x_spec, w_spec in [(one, P("data"), P(None, "data")),
                               (two, P(("a", "b")), P("b", "a"))]:
    out = product(jax.device_put(x, NamedSharding(mesh, x_spec)),
                  jax.device_put(w, NamedSharding(mesh, w_spec)))
    np.testing.assert_allclose(out, x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.devices(4)
@pytest.mark.parametrize("check_vma", [True, False])
def test_inside_shard_map_the_kernel_types_and_sums_as_xla_does(check_vma):
  # With check_vma the gradient of a weight every device shares is summed
  # over the devices (as for XLA's dot); without, each device has its own.
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  w, x = _random((32, 16), 0), _random((64, 32), 1) * 0.3

  def per_device(loss):
    return jax.jit(jax.shard_map(lambda w, x: jax.lax.psum(jax.grad(loss)(w, x), "data"),
                                 mesh=mesh, in_specs=(P(), P("data")), out_specs=P(),
                                 check_vma=check_vma))

  xla_loss = lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2)  # noqa: E731
  np.testing.assert_allclose(per_device(_loss)(w, x), per_device(xla_loss)(w, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.devices(4)
def test_a_seed_axis_program_with_an_automatic_batch_axis_is_right():
  # shard_map over the seeds, the batch split automatically inside: correct,
  # though the operands are gathered along that axis (why model_matmuls asks
  # for the shard_map strategy there).
  mesh = jax.make_mesh((2, 2), ("seed", "data"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  w, x = _random((32, 16), 0), _random((64, 32), 1) * 0.3
  ws = jnp.stack([w, 2 * w])
  run = jax.jit(
      jax.shard_map(lambda ws, x: jax.vmap(jax.grad(_loss), in_axes=(0, None))(ws, x),
                    mesh=mesh, in_specs=(P("seed"), P()), out_specs=P("seed"),
                    axis_names={"seed"}, check_vma=False),
      in_shardings=(NamedSharding(mesh, P("seed")), NamedSharding(mesh, P("data"))))
  np.testing.assert_allclose(run(ws, x), jax.vmap(jax.grad(_loss), in_axes=(0, None))(ws, x),
                             rtol=1e-5, atol=1e-5)
