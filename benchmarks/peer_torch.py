"""The same autoencoders in PyTorch, eager or ``torch.compile``d.

``python -m benchmarks.peer_torch --model conv --batch-size 256 [--compile]``
prints one JSON line. The loop is the ordinary PyTorch one: a fresh
permutation per epoch, ``x[idx]`` batches, ``zero_grad`` / ``backward`` /
``step``, no host synchronisation inside an epoch. On a machine with a CUDA
GPU the data, model and optimizer live on it (``torch.cuda.synchronize``
closes each timed epoch); ``--dtype bfloat16`` runs forward and loss under
``torch.autocast``, PyTorch's mixed precision.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks import common


def build_model(model: str) -> nn.Module:
  """784-256-64-256-784, or the conv AE: 2 stride-2 convs, 2 transposed convs, logits."""
  if model == "dense":
    sizes = [784, *common.DENSE_WIDTHS, *reversed(common.DENSE_WIDTHS[:-1]), 784]
    linear = {len(common.DENSE_WIDTHS) - 1, len(sizes) - 2}  # The code and the logits.
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
      layers.append(nn.Linear(a, b))
      if i not in linear:
        layers.append(nn.ReLU())
    layers.append(nn.Unflatten(1, (1, 28, 28)))
    return nn.Sequential(*layers)
  c1, c2 = common.CONV_CHANNELS
  k = common.KERNEL_SIZE
  return nn.Sequential(
      nn.Conv2d(1, c1, k, stride=2, padding=1), nn.ReLU(),
      nn.Conv2d(c1, c2, k, stride=2, padding=1), nn.ReLU(),
      nn.ConvTranspose2d(c2, c2, k, stride=2, padding=1, output_padding=1), nn.ReLU(),
      nn.ConvTranspose2d(c2, c1, k, stride=2, padding=1, output_padding=1), nn.ReLU(),
      nn.Conv2d(c1, 1, k, padding=1),
  )


def set_precision(precision: str) -> None:
  """Exact float32 products on a GPU, or TF32 in both cuBLAS and cuDNN (no-op on CPU)."""
  tf32 = precision == "tf32"
  torch.backends.cuda.matmul.allow_tf32 = tf32
  torch.backends.cudnn.allow_tf32 = tf32


def run(args, compile_: bool) -> dict[str, Any]:
  torch.manual_seed(args.seed)
  torch.set_num_threads(args.threads)
  set_precision(args.precision)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=args.dtype == "bfloat16")
  bs = args.batch_size
  steps = common.steps_per_rep(bs, args.samples)
  n = steps * bs
  # NCHW, PyTorch's layout; the same values as the others' NHWC images.
  x = torch.from_numpy(
      common.make_images(n, args.seed).transpose(0, 3, 1, 2).copy()).to(device)
  model = build_model(args.model).to(device)
  opt = torch.optim.Adam(model.parameters(), lr=common.LEARNING_RATE, eps=common.ADAM_EPS)

  graphs = compile_ and args.compile_mode == "reduce-overhead"

  def train_step(xb):
    if graphs:  # A new step: the graphs may reuse the last step's output buffers.
      torch.compiler.cudagraph_mark_step_begin()
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = F.binary_cross_entropy_with_logits(model_fn(xb).float(), xb)
    loss.backward()
    opt.step()
    return loss

  model_fn = torch.compile(model, mode=args.compile_mode) if compile_ else model
  gen = torch.Generator(device=device).manual_seed(args.seed)

  def epoch():
    order = torch.randperm(n, generator=gen, device=device)
    loss = None
    for i in range(steps):
      loss = train_step(x[order[i * bs:(i + 1) * bs]])
    loss = loss.detach()
    sync()
    return loss

  t0 = time.perf_counter()
  epoch()
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.reps):
    t0 = time.perf_counter()
    loss = epoch()
    times.append(time.perf_counter() - t0)
  train = common.summarize(times, n)
  record = {
      "impl": "torch.compile" if compile_ else "pytorch", "arch": args.model,
      "batch_size": bs, "devices": 1, "steps_per_rep": steps, "samples_per_rep": n,
      "train": train, "first_call_s": first,
      "compile_s": max(first - train["median_s"], 0.0), "loss": loss.item(),
      "threads": torch.get_num_threads(), "versions": {"torch": torch.__version__},
      "platform": device.type, "dtype": args.dtype, "precision": args.precision,
      "compile_mode": args.compile_mode,
  }
  if not args.no_inference:
    model.eval()
    batches = [x[i * bs:(i + 1) * bs] for i in range(steps)]
    with torch.inference_mode(), autocast:
      t0 = time.perf_counter()
      model_fn(batches[0])
      sync()
      record["infer_first_call_s"] = time.perf_counter() - t0
      times = []
      for _ in range(args.reps):
        t0 = time.perf_counter()
        for b in batches:
          model_fn(b)
        sync()
        times.append(time.perf_counter() - t0)
    record["infer"] = common.summarize(times, n)
  record["peak_rss_mb"] = common.peak_rss_mb()
  if device.type == "cuda":
    record["device_memory"] = {"peak_bytes_in_use": int(torch.cuda.max_memory_allocated())}
  return record


def main(argv=None) -> None:
  def extra(p):
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile's mode (reduce-overhead: CUDA graphs on a GPU)")

  args = common.peer_args(argv, "PyTorch throughput", extra)
  try:
    common.emit(run(args, args.compile))
  except Exception as e:  # pylint: disable=broad-except
    # torch.compile needs a C++ toolchain and may fail: report, don't crash.
    common.emit({"impl": "torch.compile" if args.compile else "pytorch",
                 "arch": args.model, "batch_size": args.batch_size,
                 "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                 "traceback": traceback.format_exc()[-2000:]})


if __name__ == "__main__":
  main()
