// flaxae's CPU matrix product: an XLA FFI handler for C = op(A) · op(B) in
// float32 (row-major, op = transpose or not) that calls a CBLAS `cblas_sgemm`
// (MKL's, set once from Python through `flaxae_set_sgemm`), split into parts
// over XLA's own intra-op thread pool. The BLAS runs single-threaded in each
// part, so no second thread pool (OpenMP) competes with XLA's for the cores.
//
// Built by flaxae/kernels/native.py against the installed jaxlib's FFI headers.

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Sgemm = void (*)(int layout, int trans_a, int trans_b, int m, int n, int k,
                       float alpha, const float* a, int lda, const float* b, int ldb,
                       float beta, float* c, int ldc);
Sgemm sgemm_fn = nullptr;

// A rank-2 float32 buffer (an alias: the handler macro splits on commas).
using Matrix = ffi::Buffer<ffi::F32, 2>;

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
// Parts start on multiples of this many rows (or columns): 64-byte aligned.
constexpr int64_t kAlign = 16;

struct Product {
  bool trans_a, trans_b;
  int64_t m, n, k;
  const float* a;
  const float* b;
  float* c;

  // Rows [lo, hi) of C if split_rows, else its columns [lo, hi).
  void Run(bool split_rows, int64_t lo, int64_t hi) const {
    const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
    const float* ap = a;
    const float* bp = b;
    float* cp = c;
    int64_t rows = m, cols = n;
    if (split_rows) {
      ap = trans_a ? a + lo : a + lo * lda;
      cp = c + lo * n;
      rows = hi - lo;
    } else {
      bp = trans_b ? b + lo * ldb : b + lo;
      cp = c + lo;
      cols = hi - lo;
    }
    sgemm_fn(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans,
             static_cast<int>(rows), static_cast<int>(cols), static_cast<int>(k), 1.0f,
             ap, static_cast<int>(lda), bp, static_cast<int>(ldb), 0.0f, cp,
             static_cast<int>(n));
  }
};

// A product's parts, run by whichever threads claim them.
struct Work {
  Work(const Product& p, bool split_rows, int64_t extent, int64_t parts)
      : p(p), split_rows(split_rows), extent(extent), parts(parts), done(parts) {}

  // Part i: rows (or columns) [bound(i), bound(i + 1)), on multiples of kAlign.
  int64_t Bound(int64_t i) const {
    return std::min(extent, (extent * i / parts + kAlign - 1) / kAlign * kAlign);
  }

  // Runs unclaimed parts until none is left.
  void Claim() {
    for (int64_t i = next.fetch_add(1); i < parts; i = next.fetch_add(1)) {
      const int64_t lo = Bound(i), hi = Bound(i + 1);
      if (hi > lo) p.Run(split_rows, lo, hi);
      done.CountDown();
    }
  }

  const Product p;
  const bool split_rows;
  const int64_t extent, parts;
  std::atomic<int64_t> next{0};
  ffi::CountDownPromise done;
};

ffi::Future Done(ffi::Error error = ffi::Error::Success()) {
  ffi::Promise promise;
  ffi::Future future(promise);
  if (error.success()) {
    promise.SetAvailable();
  } else {
    promise.SetError(error);
  }
  return future;
}

ffi::Future SgemmImpl(ffi::ThreadPool pool, Matrix a, Matrix b,
                      ffi::ResultBuffer<ffi::F32, 2> c,
                      bool trans_a, bool trans_b, int64_t parts) {
  if (sgemm_fn == nullptr) {
    return Done(ffi::Error::Internal("flaxae_sgemm: no BLAS set (flaxae_set_sgemm)"));
  }
  auto ad = a.dimensions(), bd = b.dimensions();
  Product p{trans_a, trans_b,
            trans_a ? ad[1] : ad[0], trans_b ? bd[0] : bd[1], trans_a ? ad[0] : ad[1],
            a.typed_data(), b.typed_data(), c->typed_data()};
  if ((trans_b ? bd[1] : bd[0]) != p.k) {
    return Done(ffi::Error::InvalidArgument("flaxae_sgemm: contracting sizes differ"));
  }
  if (p.m > INT_MAX || p.n > INT_MAX || p.k > INT_MAX ||
      std::max(p.m, p.k) * std::max(p.n, p.k) > INT64_MAX / 4) {
    return Done(ffi::Error::InvalidArgument("flaxae_sgemm: a dimension exceeds BLAS's int"));
  }
  if (p.m == 0 || p.n == 0) return Done();
  if (p.k == 0) {
    std::memset(p.c, 0, sizeof(float) * p.m * p.n);
    return Done();
  }
  const bool split_rows = p.m >= p.n;
  const int64_t extent = split_rows ? p.m : p.n;
  if (parts <= 0) parts = std::max<int64_t>(1, pool.num_threads());
  parts = std::max<int64_t>(1, std::min(parts, extent / kAlign));
  if (parts == 1) {
    p.Run(split_rows, 0, extent);
    return Done();
  }
  // The parts are claimed from a shared counter, by this thread and by helper
  // tasks on XLA's pool. This thread takes parts until none is left, so it
  // never waits for the pool to start a task: its threads may all be busy
  // (another device's program blocked in a collective, say) without
  // deadlocking this call. The result is ready when every part has run; a
  // helper that starts after all were claimed does nothing.
  auto work = std::make_shared<Work>(p, split_rows, extent, parts);
  ffi::Future future(work->done);
  for (int64_t i = 1; i < parts; ++i) {
    pool.Schedule([work]() { work->Claim(); });
  }
  work->Claim();
  return future;
}

}  // namespace

extern "C" void flaxae_set_sgemm(void* fn) { sgemm_fn = reinterpret_cast<Sgemm>(fn); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(FlaxaeSgemm, SgemmImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b")
                                  .Attr<int64_t>("parts"));
