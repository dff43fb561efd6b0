"""Where the time of a flaxae training step goes, measured two ways.

    python -m benchmarks.breakdown [--model dense] [--batch-size 256]

1. **Variants of the step**, each compiled into the same fused epoch
   (:func:`flaxae.train.parallel.make_train_chunk`) and timed interleaved in one
   process: the library's ``train_step``; the same on flattened 784-vectors
   instead of 28×28×1 images; without the non-finite guard and gradient norm;
   with a cheaper guard (``lax.cond`` on the loss and gradient norm); without
   the loss value (so XLA drops the softplus); with SGD instead of Adam; and
   (dense) the model's matmuls alone, the ceiling at this batch size.
2. **An XLA profile** (``jax.profiler`` trace) of one fused epoch of the
   library's step, each executed op attributed to a category by the op's
   source location in the HLO metadata (matmul, im2col, layout copies, loss,
   optimizer, ...).

Prints markdown tables and writes ``benchmarks/out/breakdown-<model>.json``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import glob
import gzip
import json
import re
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from benchmarks import common, flaxae_bench
from flaxae import io
from flaxae.train import parallel
from flaxae.train.build import build
from flaxae.train.step import train_step


# --- Step variants (benchmark-only; the library's step is the first) ---------


def unguarded_step(state, batch, *, model, objective, tx, cfg, axis_name=None):
  """The library's step less the non-finite guard and the gradient norm."""
  del axis_name
  key = jax.random.fold_in(state.key, state.step)

  def loss_fn(params):
    return objective(model, {"params": params, **state.model_state}, batch, key, cfg).loss

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state), {"loss": loss}


def no_loss_value_step(state, batch, *, model, objective, tx, cfg, axis_name=None):
  """Gradient and update only: the loss value is dead code that XLA drops."""
  del axis_name
  key = jax.random.fold_in(state.key, state.step)

  def loss_fn(params):
    return objective(model, {"params": params, **state.model_state}, batch, key, cfg).loss

  grads = jax.grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state), {}


def cond_guard_step(state, batch, *, model, objective, tx, cfg, axis_name=None):
  """The library's step with a cheaper guard: one ``isfinite`` of the loss and
  of the gradient norm (which the step reports anyway), and ``lax.cond`` to
  skip the update instead of a ``where`` over every parameter and moment."""
  del axis_name
  key = jax.random.fold_in(state.key, state.step)

  def loss_fn(params):
    return objective(model, {"params": params, **state.model_state}, batch, key, cfg).loss

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def update(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt_state

  params, opt_state = jax.lax.cond(finite, update,
                                   lambda _: (state.params, state.opt_state), None)
  bad = (~finite).astype(jnp.int32)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       skipped=state.skipped + bad,
                       bad_streak=(state.bad_streak + 1) * bad), {
                           "loss": loss, "skipped": bad.astype(jnp.float32),
                           "grad_norm": grad_norm}


VARIANTS: dict[str, tuple[Callable, bool, str]] = {  # name → (step, flat data, optimizer)
    "library train_step (the real path)": (train_step, False, "adam"),
    "library train_step, data as (B, 784) vectors": (train_step, True, "adam"),
    "without non-finite guard and grad norm": (unguarded_step, False, "adam"),
    "guard by lax.cond on isfinite(loss, grad norm)": (cond_guard_step, False, "adam"),
    "without the loss value (gradient only)": (no_loss_value_step, False, "adam"),
    "without the loss value, (B, 784) vectors": (no_loss_value_step, True, "adam"),
    "library train_step, SGD instead of Adam": (train_step, False, "sgd"),
}


def make_epoch(model_name: str, batch_size: int, steps: int, step_impl: Callable,
               flat: bool, optimizer: str, seed: int = 0):
  """A ``run()`` that trains one fused epoch, and the compiled chunk's HLO text."""
  cfg = flaxae_bench.benchmark_config(model_name, batch_size)
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, optimizer=optimizer))
  n = steps * batch_size
  data = common.make_images(n, seed)
  if flat:
    data = data.reshape(n, -1)
  mesh = parallel.make_mesh(1)
  model, objective, tx, init, abstract = build(cfg, data.shape[1:], steps, mesh)
  sharding = jax.tree.map(lambda x: x.sharding, abstract)
  step_fn = functools.partial(step_impl, model=model, objective=objective, tx=tx,
                              cfg=cfg.model)
  chunk = parallel.make_train_chunk(step_fn, mesh, "jit", batch_size=batch_size,
                                    num_examples=n, state_sharding=sharding)
  on_device = jax.device_put(data)
  box = [jax.jit(init, out_shardings=sharding)()]
  order = parallel.EpochOrders(box[0].rng, n, batch_size, mesh)(0)  # One order, reused.
  t0 = time.perf_counter()
  lowered = chunk.lower(box[0], on_device, order, steps)
  t1 = time.perf_counter()
  hlo = lowered.compile().as_text()
  t2 = time.perf_counter()

  def run():
    box[0], _ = chunk(box[0], on_device, order, steps)
    jax.block_until_ready(box[0])

  run()  # Compiles (again, through jit's own cache) and warms up.
  return run, n, hlo, {"trace_lower_s": t1 - t0, "xla_compile_s": t2 - t1}


def make_matmuls_only(batch_size: int, steps: int, seed: int = 0):
  """The dense AE's 11 matmuls of a training step (4 forward, 4 weight
  gradients, 3 input gradients) at the same shapes, nothing else, fused the
  same way: the ceiling for this model at this batch size."""
  sizes = _SIZES
  n = steps * batch_size
  data = jax.device_put(common.make_images(n, seed).reshape(n, -1))
  keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
  weights = [jax.random.normal(k, (a, b)) * a**-0.5
             for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

  def body(ws, i):
    h = [jax.lax.dynamic_slice_in_dim(data, i * batch_size, batch_size)]
    for w in ws:
      h.append(h[-1] @ w)
    g, grads = h[-1], [None] * len(ws)
    for j in reversed(range(len(ws))):
      grads[j] = h[j].T @ g
      if j:
        g = g @ ws[j].T
    return [w - 1e-6 * dw for w, dw in zip(ws, grads)], None

  chunk = jax.jit(lambda ws: jax.lax.scan(body, ws, jnp.arange(steps))[0], donate_argnums=0)
  t0 = time.perf_counter()
  chunk = chunk.lower(weights).compile()
  compile_s = time.perf_counter() - t0
  box = [weights]

  def run():
    box[0] = chunk(box[0])
    jax.block_until_ready(box[0])

  run()
  return run, n, "", {"trace_lower_s": 0.0, "xla_compile_s": compile_s}


MATMULS_ONLY = "the model's 11 matmuls alone (no loss, activations, optimizer)"
_SIZES = [784, *common.DENSE_WIDTHS, *reversed(common.DENSE_WIDTHS[:-1]), 784]
# The dense AE's products per sample: forward and weight gradients of every
# layer, input gradients of all but the first (the data need none).
ACTUAL_DENSE_FLOPS = 2 * (3 * common.model_macs("dense") - _SIZES[0] * _SIZES[1])


def _variant_indices(text: str) -> list[int]:
  indices = [common.non_negative_int(x) for x in text.split(",") if x.strip()]
  for i in indices:
    if i >= len(VARIANTS):
      raise argparse.ArgumentTypeError(f"no variant {i}; they are 0 to {len(VARIANTS) - 1}")
  return indices


def time_variants(model_name: str, batch_size: int, steps: int, reps: int,
                  names: list[str]) -> dict[str, Any]:
  runs = {name: make_matmuls_only(batch_size, steps) if name == MATMULS_ONLY else
          make_epoch(model_name, batch_size, steps, *VARIANTS[name]) for name in names}
  times = {name: [] for name in names}
  for _ in range(reps):  # Interleaved, so that load on the machine hits all alike.
    for name, (run, _, _, _) in runs.items():
      t0 = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - t0)
  out = {}
  for name, (_, n, _, compile_times) in runs.items():
    out[name] = {**common.summarize(times[name], n), **compile_times}
  return out


# --- The op profile --------------------------------------------------------------

_INSTR = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(.*?op_name=\"([^\"]+)\"")


def categorize(opcode: str, op_name: str) -> str:
  """A coarse category for one executed HLO op, from its source location."""
  leaf = op_name.rsplit("/", 1)[-1]
  if opcode == "dot" or leaf == "dot_general":
    return "matmul (dot)"
  if "softplus" in op_name or re.search(r"(^|/)(transpose\()?jvp\(\)", op_name):
    return "loss (BCE, its gradient and reduction)"
  if "Autoencoder" in op_name:
    if leaf == "concatenate" or opcode == "concatenate":
      return "im2col: concatenate patches"
    if leaf in ("pad", "slice") or "pad" in opcode or "slice" in opcode:
      return "im2col: pad / slice (and their gradients)"
    if leaf in ("transpose", "reshape") or opcode in ("copy", "transpose"):
      return "layout: transpose / reshape copies"
    if "relu" in op_name or leaf in ("select_n", "max"):
      return "activations (ReLU and its gradient)"
    return "model: other (bias adds, bias gradients)"
  if any(k in op_name for k in ("_where", "is_finite", "isfinite", "reduce_and")):
    return "optimizer update fused with the non-finite guard"
  if any(k in op_name for k in ("_take", "gather", "_shuffle", "sort", "permutation")):
    return "data: epoch order and batch gather"
  return "optimizer and the rest"


def profile(run: Callable, hlo: str, steps: int, logdir: str) -> dict[str, Any]:
  """Per-step milliseconds of each category, from a trace of one ``run()``."""
  info = {}
  for line in hlo.splitlines():
    m = _INSTR.match(line)
    if m:
      info.setdefault(m.group(1), (m.group(3), m.group(4), m.group(2)))
  jax.profiler.start_trace(logdir, create_perfetto_trace=True)
  t0 = time.perf_counter()
  run()
  wall = time.perf_counter() - t0
  jax.profiler.stop_trace()
  path = sorted(glob.glob(f"{logdir}/**/*.trace.json.gz", recursive=True))[-1]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  per_op: collections.Counter = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in info:
      per_op[e["name"]] += e.get("dur", 0) / 1e3 / steps  # ms per step
  cats: collections.Counter = collections.Counter()
  for name, ms in per_op.items():
    cats[categorize(info[name][0], info[name][1])] += ms
  total = sum(per_op.values())
  top = [{"op": name, "ms_per_step": ms, "shape": info[name][2],
          "source": info[name][1].split("closed_call/")[-1],
          "category": categorize(info[name][0], info[name][1])}
         for name, ms in per_op.most_common(15)]
  return {"wall_ms_per_step_traced": wall * 1e3 / steps, "ops_ms_per_step": total,
          "categories": dict(cats.most_common()), "top_ops": top}


def variant_names(model: str, indices: list[int]) -> list[str]:
  """The variants to time: the library's step first (the baseline of every
  ratio, and the one profiled), then those of ``indices`` (default: all), then
  for the dense AE its matmuls alone. The conv AE has no flattened variants.

  Raises:
    ValueError: a flattened variant was asked for the conv AE.
  """
  names = list(VARIANTS)
  if indices:
    names = [names[0]] + [names[i] for i in dict.fromkeys(indices) if i]
  if model == "dense":
    return names + [MATMULS_ONLY]
  flat = [n for n in names if VARIANTS[n][1]]
  if indices and flat:
    raise ValueError(f"the conv AE has no flattened variant: {', '.join(flat)}")
  return [n for n in names if not VARIANTS[n][1]]


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="where a flaxae step's time goes")
  p.add_argument("--model", choices=common.MODELS, default="dense")
  p.add_argument("--batch-size", type=common.positive_int, default=256)
  p.add_argument("--steps", type=common.non_negative_int, default=0,
                 help="steps per epoch (default: by model)")
  p.add_argument("--reps", type=common.positive_int, default=7)
  p.add_argument("--variants", default="", type=_variant_indices,
                 help="comma-separated indices of the variants to time besides the "
                      "library's step, 0, which is always timed (default: all): " +
                      "; ".join(f"{i} {name}" for i, name in enumerate(VARIANTS)) +
                      " (1 and 5 dense only)")
  p.add_argument("--out", default="",
                 help="the JSON file (default: benchmarks/out/breakdown-MODEL.json)")
  args = p.parse_args(argv)
  steps = args.steps or (64 if args.model == "dense" else 4)
  try:
    names = variant_names(args.model, args.variants)
  except ValueError as e:
    p.error(str(e))
  args.out = common.output_file(p, args.out or f"benchmarks/out/breakdown-{args.model}.json")

  variants = time_variants(args.model, args.batch_size, steps, args.reps, names)
  base = variants[names[0]]["samples_per_s"]
  print(f"## {args.model} AE, batch {args.batch_size}: step variants "
        f"({steps} steps per fused epoch, median of {args.reps})\n")
  flops = common.train_flops_per_sample(common.model_macs(args.model))
  print("| variant | samples/s | min–max | GFLOP/s (model count) | vs library | "
        "trace+lower s | XLA compile s |")
  print("|---|---|---|---|---|---|---|")
  for name, r in variants.items():
    print(f"| {name} | {r['samples_per_s']:,.0f} | {r['samples_per_s_min']:,.0f}–"
          f"{r['samples_per_s_max']:,.0f} | {r['samples_per_s'] * flops / 1e9:.0f} | "
          f"{r['samples_per_s'] / base:.2f} | "
          f"{r['trace_lower_s']:.2f} | {r['xla_compile_s']:.2f} |")
  print(f"\nGFLOP/s counts {flops / 1e6:.2f} MFLOP per sample, the roofline's count (3× the "
        f"forward pass)" + (
            f"; every variant computes the same 11 products, {ACTUAL_DENSE_FLOPS / 1e6:.2f} "
            f"MFLOP per sample (no gradient for the input), "
            f"{100 * ACTUAL_DENSE_FLOPS / flops:.0f} % of it." if args.model == "dense"
            else "."))

  run, _, hlo, _ = make_epoch(args.model, args.batch_size, steps, *VARIANTS[names[0]])
  with tempfile.TemporaryDirectory() as logdir:
    prof = profile(run, hlo, steps, logdir)
  print(f"\n## XLA op profile of the library step: {prof['ops_ms_per_step']:.2f} ms of ops "
        f"per step ({prof['wall_ms_per_step_traced']:.2f} ms wall, traced)\n")
  print("| category | ms/step | share |\n|---|---|---|")
  for cat, ms in prof["categories"].items():
    print(f"| {cat} | {ms:.3f} | {100 * ms / prof['ops_ms_per_step']:.0f}% |")
  print("\n| top ops | ms/step | shape | source |\n|---|---|---|---|")
  for op in prof["top_ops"]:
    print(f"| {op['op']} | {op['ms_per_step']:.3f} | `{op['shape']}` | {op['source']} |")
  io.write_json(args.out, {"model": args.model, "batch_size": args.batch_size,
                           "steps": steps, "variants": variants, "profile": prof})


if __name__ == "__main__":
  main()
