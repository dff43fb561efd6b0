"""Building and loading flaxae's native CPU kernel (``sgemm.cc``).

The kernel is an XLA FFI handler, compiled on first use with the machine's
C++ compiler against the installed jaxlib's FFI headers (so it always matches
the jaxlib that loads it) and cached under ``$FLAXAE_CACHE_DIR`` (default
``~/.cache/flaxae``), keyed by the source, the jaxlib version and the
compiler. Its products are MKL's ``cblas_sgemm``, from the ``mkl`` wheel
(``pip install "flaxae[mkl]"``) or the library ``$FLAXAE_MKL`` names, run in
MKL's sequential threading layer: the kernel splits each product over XLA's
own thread pool instead.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import jax
import jaxlib

from flaxae.errors import KernelError

TARGET = "flaxae_sgemm"
SOURCE = Path(__file__).with_name("sgemm.cc")
_MKL_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL in mkl_service.h

_lock = threading.Lock()
_registered = False


def cache_dir() -> Path:
  root = os.environ.get("FLAXAE_CACHE_DIR")
  if root:
    return Path(root)
  return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flaxae"


def find_mkl() -> str:
  """The path of MKL's single dynamic library (``libmkl_rt``)."""
  named = os.environ.get("FLAXAE_MKL")
  if named:
    if not os.path.isfile(named):
      raise KernelError(f"FLAXAE_MKL={named} is not a file")
    return named
  for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
    found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
    if found:
      return found[0]
  raise KernelError(
      "train.cpu_matmuls=mkl needs Intel MKL: install it with "
      "`pip install \"flaxae[mkl]\"` (the mkl wheel), or set FLAXAE_MKL to the path "
      "of a libmkl_rt.so")


def _compiler() -> str:
  cxx = os.environ.get("CXX", "g++")
  path = shutil.which(cxx)
  if path is None:
    raise KernelError(
        f"train.cpu_matmuls=mkl compiles a small XLA kernel on first use, but no C++ "
        f"compiler {cxx!r} was found: install g++ (or set CXX), or use "
        f"train.cpu_matmuls=xla")
  return path


def build() -> Path:
  """The compiled kernel's path, compiling it if this version is not cached."""
  cxx = _compiler()
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
  source = SOURCE.read_bytes()
  key = hashlib.sha256(source + jaxlib.__version__.encode() + version.encode())
  out = cache_dir() / "kernels" / f"flaxae_sgemm-{key.hexdigest()[:16]}.so"
  if out.exists():
    return out
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compiled to a temporary name in the same folder, then renamed: processes
    # building at once (test workers, hosts) never load a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  except OSError as e:
    raise KernelError(f"cannot write the compiled kernel to {out.parent} ({e}): set "
                      f"FLAXAE_CACHE_DIR to a writable folder") from None
  os.close(fd)
  cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
         f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
  done = subprocess.run(cmd, capture_output=True, text=True)
  if done.returncode:
    os.unlink(tmp)
    raise KernelError(f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n"
                      f"{done.stderr.strip()[-2000:]}")
  os.replace(tmp, out)
  return out


def available() -> bool:
  """Whether the kernel can be built and loaded here (MKL and a compiler found)."""
  try:
    find_mkl()
    _compiler()
  except KernelError:
    return False
  return True


def register() -> None:
  """Builds, loads and registers the kernel with XLA's CPU backend (once)."""
  global _registered
  with _lock:
    if _registered:
      return
    mkl = ctypes.CDLL(find_mkl())
    try:
      mkl.MKL_Set_Threading_Layer(_MKL_SEQUENTIAL)
      sgemm = ctypes.cast(mkl.cblas_sgemm, ctypes.c_void_p)
    except AttributeError as e:
      raise KernelError(f"{mkl._name} is not MKL's runtime library: {e}") from None
    lib = ctypes.CDLL(str(build()))
    lib.flaxae_set_sgemm(sgemm)
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.FlaxaeSgemm), platform="cpu")
    _registered = True
