"""Measure a model's training and inference throughput: ``flaxae bench``.

Training runs :func:`flaxae.train.parallel.make_train_chunk` around the pure
:func:`flaxae.train.step.train_step`, exactly as the training loop does: the
data resident on the devices, one repetition = one epoch fused with
``lax.scan`` into one compiled call, the state donated. The first call
(tracing + compilation + one epoch) is timed apart from the repetitions, and
the result is set against the device's float32 matmul peak, measured in the
same process (:func:`matmul_peak`). ``benchmarks/`` runs the same code next to
PyTorch and Keras.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxae import config as config_lib
from flaxae import io, kernels
from flaxae.kernels import native
from flaxae.data import compact
from flaxae.config import Config, ModelConfig
from flaxae.errors import ConfigError
from flaxae.timing import (best_seconds, conv_macs, dense_macs, peak_rss_mb, steps_per_rep,
                           summarize, train_flops_per_sample)
from flaxae.train import parallel
from flaxae.train.build import setup
from flaxae.train.compilation import compilation_cache
from flaxae.train.seeds import seed_variables


PRECISIONS = {"float32": "highest", "tf32": "tensorfloat32"}


def set_matmul_precision(precision: str) -> None:
  """Float32 products on an accelerator: exact (``float32``) or ``tf32``.

  JAX lets XLA compute float32 dots and convolutions in TF32 on recent NVIDIA
  GPUs by default; a benchmark that sets its peers to a precision sets JAX to
  the same one. CPUs compute float32 either way, so nothing is changed there
  (the CPU programs stay exactly those the library compiles).
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
  if jax.default_backend() != "cpu":
    jax.config.update("jax_default_matmul_precision", PRECISIONS[precision])


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> dict[str, Any]:
  """GFLOP/s of an ``n×n @ n×n`` matmul in JAX (and NumPy on CPU): the roofline's ceiling.

  ``dtype`` is that of the operands (``bfloat16`` accumulates in float32); a
  float32 product on an accelerator runs at the precision
  :func:`set_matmul_precision` chose. NumPy's BLAS, and MKL's through
  flaxae's kernel (:mod:`flaxae.kernels`, where MKL is installed), are timed
  only for float32 on a CPU, where they may beat XLA's; the peak is the best.
  """
  flops = 2 * n**3
  platform = jax.default_backend()
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  numpy_gflops = None
  if platform == "cpu" and dtype == "float32":
    numpy_gflops = flops / best_seconds(lambda: a @ b, repeats) / 1e9
  ja, jb = (jax.device_put(m.astype(jnp.dtype(dtype))) for m in (a, b))
  matmul = jax.jit(functools.partial(jnp.matmul, preferred_element_type=jnp.float32))
  jax_gflops = flops / best_seconds(lambda: matmul(ja, jb).block_until_ready(), repeats) / 1e9
  mkl_gflops = None
  if platform == "cpu" and dtype == "float32" and native.available():
    mkl = jax.jit(kernels.matmul)
    mkl_gflops = flops / best_seconds(lambda: mkl(ja, jb).block_until_ready(), repeats) / 1e9
  return {
      "n": n, "repeats": repeats, "dtype": dtype, "numpy_gflops": numpy_gflops,
      "jax_gflops": jax_gflops, "mkl_gflops": mkl_gflops,
      "peak_gflops": max(numpy_gflops or 0.0, jax_gflops, mkl_gflops or 0.0),
      "platform": platform, "device_count": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "precision": str(jax.config.jax_default_matmul_precision),
      "versions": {"jax": jax.__version__, "numpy": np.__version__},
  }


def model_macs(cfg: ModelConfig, feature_shape: tuple[int, ...]) -> int:
  """MACs of one example through the model ``cfg`` describes."""
  from flaxae.models import encoder_widths  # pylint: disable=import-outside-toplevel
  if cfg.arch == "dense":
    n = int(np.prod(feature_shape))
    return dense_macs(n, encoder_widths(tuple(cfg.widths), n))
  return conv_macs(feature_shape, cfg.channels, cfg.kernel_size, cfg.latent_dim)


def _device_memory() -> dict[str, Any] | None:
  stats = jax.local_devices()[0].memory_stats()
  if not stats:
    return None
  keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
  return {k: int(stats[k]) for k in keys if k in stats}


def run(cfg: Config, data: np.ndarray, *, reps: int = 5, inference: bool = True,
        resident_bytes: bool = False) -> dict[str, Any]:
  """Times training (and inference) of ``cfg``'s model on ``data``.

  Args:
    cfg: The run's config; ``train.batch_size``, ``train.num_devices`` and
      ``train.strategy`` are used as they are.
    data: ``(N, *feature_shape)`` float32 examples; one repetition is one epoch
      of ``N // batch_size`` steps over them.
    reps: Timed repetitions after the first (compiling) call.
    inference: Also time encode + decode over the same batches.
    resident_bytes: Keep the training set on the devices as bytes where that
      loses nothing, as the training loop does (:mod:`flaxae.data.compact`);
      the peer benchmarks leave it float32, as the peers keep theirs.

  Returns:
    A JSON-ready record: ``train`` and ``infer`` timings (see
    :func:`benchmarks.summarize`), ``first_call_s`` and ``compile_s``
    (first call less a steady epoch), the last loss, peak memory and FLOPs.
  """
  cfg = config_lib.validate(cfg)
  bs, feature_shape = cfg.train.batch_size, tuple(data.shape[1:])
  num_seeds = cfg.train.num_seeds
  steps = len(data) // bs
  num_examples = steps * bs
  data = data[:num_examples]
  built = setup(cfg, feature_shape, num_examples)
  mesh, model, chunk = built.mesh, built.model, built.chunk
  resident = compact.compact(data) if resident_bytes else data
  on_device = jax.device_put(resident, parallel.replicated(mesh))
  state = jax.jit(built.init, out_shardings=built.state_sharding)()
  orders = parallel.EpochOrders(state.rng, num_examples, bs, mesh, num_seeds)
  jax.block_until_ready((state, on_device))

  # --- Training: the first call compiles, then `reps` steady epochs, each
  # drawing its data order as the loop does ----------------------------------
  t0 = time.perf_counter()
  state, metrics = chunk(state, on_device, orders(0), steps)
  jax.block_until_ready(state)
  first = time.perf_counter() - t0
  times = []
  for rep in range(1, reps + 1):
    t0 = time.perf_counter()
    state, metrics = chunk(state, on_device, orders(rep * steps), steps)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  train = summarize(times, num_examples * num_seeds)  # Summed over the seeds' models.
  record: dict[str, Any] = {
      "impl": "flaxae", "arch": cfg.model.arch, "batch_size": bs,
      "devices": int(mesh.devices.size), "platform": jax.default_backend(),
      "strategy": cfg.train.strategy, "num_seeds": num_seeds, "steps_per_rep": steps,
      "samples_per_rep": num_examples, "train": train, "first_call_s": first,
      "resident_dtype": str(resident.dtype),
      "compile_s": max(first - train["median_s"], 0.0),
      "loss": float(np.mean(metrics["loss"])),  # (Mean over seeds.)
      "macs_per_sample": model_macs(cfg.model, feature_shape),
      "versions": {"jax": jax.__version__, "flax": flax.__version__,
                   "optax": optax.__version__},
  }

  # --- Inference: encode + decode of the same batches, on the devices --------
  if inference:
    variables = seed_variables(state, 0 if num_seeds > 1 else None)  # One model.
    apply = jax.jit(model.apply,
                    in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                    out_shardings=parallel.batch_sharded(mesh))
    batches = [jax.device_put(data[i * bs:(i + 1) * bs], parallel.batch_sharded(mesh))
               for i in range(steps)]
    t0 = time.perf_counter()
    jax.block_until_ready(apply(variables, batches[0]))
    record["infer_first_call_s"] = time.perf_counter() - t0
    times = []
    for _ in range(reps):
      # Outputs are not kept (the PyTorch peer keeps none either): each is
      # waited for once the next batch is dispatched, then dropped, so at most
      # two are alive and every one is known to be computed.
      t0 = time.perf_counter()
      out = None
      for b in batches:
        ahead = apply(variables, b)
        jax.block_until_ready(out)
        out = ahead
      jax.block_until_ready(out)
      times.append(time.perf_counter() - t0)
      del out
    record["infer"] = summarize(times, num_examples)
  record["peak_rss_mb"] = peak_rss_mb()
  record["device_memory"] = _device_memory()
  return record


def tiled(x: np.ndarray, num: int) -> np.ndarray:
  """The first ``num`` examples of ``x`` repeated as often as needed."""
  reps = -(-num // len(x))
  return np.concatenate([x] * reps)[:num] if reps > 1 else x[:num]


def _check_fits(num: int, train_x: np.ndarray) -> None:
  """Refuses a repeated training set of ``num`` examples that would take more
  than half of this machine's memory (``--samples`` too large)."""
  need = num * train_x[:1].nbytes
  try:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (AttributeError, ValueError, OSError):  # Not a POSIX system: no check.
    return
  if need > memory // 2:
    raise ConfigError(
        f"--samples asks for {num:,} examples per repetition: {need / 2**30:.1f} GiB as "
        f"float32, more than half of this machine's {memory / 2**30:.0f} GiB; lower --samples")


def user_benchmark(cfg: Config, *, batch_sizes: tuple[int, ...] = (), samples: int = 16384,
                   reps: int = 5, inference: bool = True, roofline: bool = True,
                   json_out: str = "", overwrite: bool = False) -> list[dict[str, Any]]:
  """``flaxae bench``: times ``cfg``'s model on its data at each batch size.

  The training set of ``cfg.data`` is repeated or cut to about ``samples``
  examples per repetition. Prints a markdown table (with the share of a
  measured float32 matmul peak) and optionally writes the records as JSON
  (an existing ``json_out`` only with ``overwrite``, checked before timing).
  """
  from flaxae.data import load_dataset  # pylint: disable=import-outside-toplevel
  for name, value in (("reps", reps), ("samples", samples)):
    if value <= 0:
      raise ConfigError(f"{name} must be positive, got {value}")
  if any(bs <= 0 for bs in batch_sizes):
    raise ConfigError(f"batch sizes must be positive, got {','.join(map(str, batch_sizes))}")
  # Every batch size's config is checked before anything is timed (a setting
  # that only one of them refuses would otherwise lose the others' results).
  configs = [config_lib.validate(dataclasses.replace(
      cfg, train=dataclasses.replace(cfg.train, batch_size=bs)))
             for bs in batch_sizes or (cfg.train.batch_size,)]
  cfg = configs[0]
  if json_out:
    io.check_output(json_out, overwrite)
  mesh = parallel.make_mesh(cfg.train.num_devices, cfg.train.num_seeds)
  with compilation_cache(cfg.compilation_cache):
    train_x = load_dataset(cfg.data).train_x
    sizes = [steps_per_rep(c.train.batch_size, samples) * c.train.batch_size for c in configs]
    for c, size in zip(configs, sizes):
      parallel.check_batch(c.train.batch_size, mesh, size)
    _check_fits(max(sizes), train_x)
    peak = None
    if roofline:
      peak = matmul_peak(repeats=5, dtype=cfg.train.compute_dtype)
    records = []
    for run_cfg, size in zip(configs, sizes):
      rec = run(run_cfg, tiled(train_x, size), reps=reps, inference=inference,
                resident_bytes=True)
      rec["train_gflops"] = (rec["train"]["samples_per_s"] *
                             train_flops_per_sample(rec["macs_per_sample"]) / 1e9)
      if peak:
        rec["roofline_pct"] = 100 * rec["train_gflops"] / peak["peak_gflops"]
      records.append(rec)
  seeds = cfg.train.num_seeds
  print(f"{cfg.model.arch} AE, {cfg.model.kind}, {cfg.model.loss} loss, "
        f"{cfg.train.optimizer}, data {cfg.data.name} {tuple(train_x.shape[1:])}, "
        f"{records[0]['platform']}; {reps} repetitions of ~{samples} examples" + (
            f"; {seeds} models at once (train.num_seeds): training samples/s and GFLOP/s "
            "are summed over them, inference is one model's" if seeds > 1 else ""))
  print("| batch | dev | train samples/s (median) | min–max | GFLOP/s | % peak | "
        "compile s | infer samples/s | peak RSS MiB |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in records:
    t = r["train"]
    infer = f"{r['infer']['samples_per_s']:,.0f}" if "infer" in r else "–"
    pct = f"{r['roofline_pct']:.0f}" if "roofline_pct" in r else "–"
    print(f"| {r['batch_size']} | {r['devices']} | {t['samples_per_s']:,.0f} | "
          f"{t['samples_per_s_min']:,.0f}–{t['samples_per_s_max']:,.0f} | "
          f"{r['train_gflops']:.1f} | {pct} | {r['compile_s']:.2f} | {infer} | "
          f"{r['peak_rss_mb']:.0f} |")
  if peak:
    numpy_part = (f"NumPy {peak['numpy_gflops']:.0f} / " if peak["numpy_gflops"] else "")
    mkl_part = (f" / MKL {peak['mkl_gflops']:.0f}" if peak["mkl_gflops"] else "")
    print(f"peak: {peak['n']}² {peak['dtype']} matmul, {numpy_part}JAX "
          f"{peak['jax_gflops']:.0f}{mkl_part} GFLOP/s")
  if json_out:
    io.write_json(json_out, {"config": config_lib.to_dict(cfg), "peak": peak,
                             "results": records}, overwrite)
  return records
