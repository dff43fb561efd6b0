"""Rate–distortion of the autoencoder codec against JPEG and WebP (Pillow).

Dense autoencoders with codes of several sizes are trained on Fashion-MNIST
(60k); the 10k test images (uint8) are compressed by ``flaxae.apps.compress``
over a range of quantisation steps, and by JPEG and WebP over their quality
range. Every codec compresses the whole test set into one file, so headers
are shared: the autoencoder's file holds all 10k images, JPEG and WebP code a
100 × 100 mosaic of them (2800 × 2800 pixels). Per-image JPEG / WebP files
(each with its own header) are reported too.

Bits per pixel = 8 · file bytes / pixels; PSNR from the mean squared error
over all pixels in [0, 1]; SSIM the mean over images (scikit-image, 7 × 7).

  python -m experiments.compression           # about 15 minutes on 2 cores
  python -m experiments.compression --quick   # seconds
"""

from __future__ import annotations

import io as pyio
import math
import time

import numpy as np
from PIL import Image

from experiments import common
from flaxae import viz
from flaxae.apps import compress as codec
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.data import load_dataset

# Steps as multiples of the median standard deviation of the training codes.
REL_STEPS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
QUALITIES = (1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)


def _config(latent: int, args) -> Config:
  epochs = 1 if args.quick else args.epochs
  data = DataConfig(name="fashion_mnist", dir=str(common.FASHION),
                    limit_train=2000 if args.quick else 0)
  return Config(
      data=data, model=ModelConfig(widths=(512, 256, latent)),
      train=TrainConfig(epochs=epochs, batch_size=256 if not args.quick else 64,
                        seed=args.seed),
      checkpoint=CheckpointConfig(every_steps=10**9, keep=1),
      run_dir=str(common.runs_dir(args) / f"fashion-dense-{latent}-e{epochs}"
                  f"{'-quick' if args.quick else ''}-s{args.seed}"))


def mosaic(x: np.ndarray) -> tuple[np.ndarray, int]:
  """uint8 images ``(N, H, W)`` tiled into a near-square ``(R·H, C·W)`` picture."""
  n, h, w = x.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  tiles = np.zeros((rows * cols, h, w), np.uint8)
  tiles[:n] = x
  return tiles.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w), cols


def unmosaic(m: np.ndarray, n: int, h: int, w: int, cols: int) -> np.ndarray:
  rows = m.shape[0] // h
  return m.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w)[:n]


def pillow_codec(fmt: str, quality: int, image: np.ndarray) -> tuple[int, np.ndarray]:
  """Bytes and decoded uint8 image of ``image`` through Pillow's ``fmt``."""
  buf = pyio.BytesIO()
  kwargs = {"optimize": True} if fmt == "JPEG" else {"method": 6}
  Image.fromarray(image, mode="L").save(buf, format=fmt, quality=quality, **kwargs)
  size = buf.tell()
  buf.seek(0)
  return size, np.asarray(Image.open(buf).convert("L"))


def _figures(x: np.ndarray, restored: np.ndarray) -> dict[str, float]:
  shape = x.shape[1:] + (1,)
  return {"psnr": codec.psnr(x / 255.0, restored / 255.0),
          "ssim": codec.ssim(x / 255.0, restored / 255.0, shape)}


def pillow_curve(fmt: str, x: np.ndarray, qualities, per_image: bool) -> list[dict]:
  n, h, w = x.shape
  rows = []
  for q in qualities:
    if per_image:
      outs = [pillow_codec(fmt, q, im) for im in x]
      size = sum(s for s, _ in outs)
      restored = np.stack([im for _, im in outs])
    else:
      m, cols = mosaic(x)
      size, decoded = pillow_codec(fmt, q, m)
      restored = unmosaic(decoded, n, h, w, cols)
    rows.append({"codec": fmt.lower() + (" per image" if per_image else ""), "quality": q,
                 "bytes": size, "bpp": 8.0 * size / x.size, "ratio": x.size / size,
                 **_figures(x, restored)})
  return rows


def ae_curve(run, x: np.ndarray, train_x: np.ndarray, rel_steps) -> tuple[list[dict], dict]:
  code_std = float(np.median(run.encode(train_x).std(axis=0)))
  rows, restored_at = [], {}
  for rel in rel_steps:
    step = float(f"{rel * code_std:.4g}")
    blob = codec.compress(run, x, step)
    restored = codec.decompress(run, blob)
    rep = codec.report(run, x, blob, restored)
    latent = int(np.prod(run.model.code_shape))
    rows.append({"codec": f"ae-{latent}", "step": step, "rel_step": rel,
                 "bytes": rep.file_bytes, "bpp": rep.bits_per_pixel, "ratio": rep.ratio,
                 "psnr": rep.psnr, "ssim": rep.ssim})
    restored_at[step] = restored
  return rows, restored_at


def _interp(curve: list[dict], bpp: float, key: str) -> float | None:
  pts = sorted((r["bpp"], r[key]) for r in curve)
  xs, ys = zip(*pts)
  if not xs[0] <= bpp <= xs[-1]:
    return None
  return float(np.interp(bpp, xs, ys))


def comparison(ae_rows: list[dict], jpeg: list[dict], lo=0.1, hi=0.5) -> list[dict]:
  """AE points in [lo, hi] bpp with JPEG's PSNR at the same rate (interpolated)."""
  out = []
  for r in ae_rows:
    if lo <= r["bpp"] <= hi:
      j = _interp(jpeg, r["bpp"], "psnr")
      out.append({"codec": r["codec"], "bpp": r["bpp"], "ae_psnr": r["psnr"],
                  "jpeg_psnr": j if j is not None else "below JPEG's lowest rate",
                  "ae_better": j is None or r["psnr"] > j})
  return out


def main(argv: list[str] | None = None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--latents", type=common.positive_ints, default=[16, 32, 64],
                 help="code sizes, comma-separated")
  p.add_argument("--epochs", type=common.positive_int, default=20)
  args = p.parse_args(argv)
  out = common.out_dir("compression", args)
  latents = [16] if args.quick else args.latents
  rel_steps = (0.25, 1.0) if args.quick else REL_STEPS
  qualities = (5, 50) if args.quick else QUALITIES
  n_test = 200 if args.quick else 0
  start = time.perf_counter()

  ds = load_dataset(_config(latents[0], args).data, args.seed)
  test = ds.test_x[:n_test or None]
  x = np.rint(test[..., 0] * 255).astype(np.uint8)  # The stored uint8 images.

  results = {"test_images": len(x), "rows": []}
  shown = {}
  for latent in latents:
    run = common.get_run(_config(latent, args))
    rows, restored = ae_curve(run, x, ds.train_x, rel_steps)
    results["rows"] += rows
    results[f"ae-{latent}_test_mse_unquantised"] = float(
        np.mean((run.reconstruct(x) - x[..., None] / 255.0) ** 2))
    near = min(rows, key=lambda r: abs(r["bpp"] - 0.3))
    shown[f"ae-{latent} {near['bpp']:.2f} bpp"] = restored[near["step"]]
  jpeg = pillow_curve("JPEG", x, qualities, per_image=False)
  webp = pillow_curve("WEBP", x, qualities, per_image=False)
  jpeg_each = pillow_curve("JPEG", x[:1000], qualities, per_image=True)
  webp_each = pillow_curve("WEBP", x[:1000], qualities, per_image=True)
  results["rows"] += jpeg + webp + jpeg_each + webp_each
  ae_rows = [r for r in results["rows"] if r["codec"].startswith("ae-")]
  results["ae_vs_jpeg_0.1_0.5_bpp"] = comparison(ae_rows, jpeg)
  results["seconds"] = time.perf_counter() - start
  results["command"] = common.command("compression", argv)
  common.write_json(out / "compression.json", results)

  curves = {}
  for r in results["rows"]:
    curves.setdefault(r["codec"], ([], [], []))
    curves[r["codec"]][0].append(r["bpp"])
    curves[r["codec"]][1].append(r["psnr"])
    curves[r["codec"]][2].append(r["ssim"])
  figs = [out / "rate_distortion_psnr.png", out / "rate_distortion_ssim.png"]
  viz.save_rate_distortion({k: (v[0], v[1]) for k, v in curves.items()}, figs[0],
                           title="Fashion-MNIST test set: PSNR against rate", xlim=(0, 2.5))
  viz.save_rate_distortion({k: (v[0], v[2]) for k, v in curves.items()}, figs[1],
                           ylabel="SSIM", title="Fashion-MNIST test set: SSIM against rate",
                           xlim=(0, 2.5))
  for name, rows in (("jpeg", jpeg), ("webp", webp)):
    near = min(rows, key=lambda r: abs(r["bpp"] - 0.3) if r["bpp"] >= 0.1 else 9)
    m, cols = mosaic(x)
    _, decoded = pillow_codec(name.upper(), near["quality"], m)
    shown[f"{name} q{near['quality']} {near['bpp']:.2f} bpp"] = unmosaic(decoded, *x.shape, cols)
  figs.append(out / "compression_examples.png")
  viz.save_grid([x[:10] / 255.0] + [np.asarray(v[:10], np.float32) / 255.0 for v in shown.values()],
                figs[-1], titles=["original"] + list(shown))
  common.publish(figs, args)

  cols = ["codec", "step", "quality", "bpp", "ratio", "psnr", "ssim"]
  print(common.table(results["rows"], cols))
  print()
  print(common.table(results["ae_vs_jpeg_0.1_0.5_bpp"],
                     ["codec", "bpp", "ae_psnr", "jpeg_psnr", "ae_better"]))
  return results


if __name__ == "__main__":
  common.cli(main)
