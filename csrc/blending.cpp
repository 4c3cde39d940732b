// Blending segment kernel (see cpt/sampling/blending.py for the Python face and the NumPy reference).
//
// Rule. Within a segment of constant weights w that starts at global sample s with per-stream targets
// B (the target counts accumulated up to s), the sample at global index g goes to
//
//     argmax_i  e_i = (B_i + w_i * (max(g, 1) - s)) - c_i          (c_i: samples already drawn)
//
// ties going to the lowest stream id. A stream with w_i == 0 takes part only while e_i > 0 (it may
// pay back a deficit it owed when its weight was set to zero, but it is never drawn from nothing).
// With s == 0 and B == 0 this is megatron-core's `build_blending_indices` (including its max(g, 1)
// and its strict `>` scan, which is the lowest-index tie-break), computed with the same IEEE double
// operations, so a static blend is sample-for-sample megatron's. The arithmetic must not be fused
// into FMAs, or ties would break differently from NumPy and from megatron's own build.
#include "blending.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace py = pybind11;

namespace cpt {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Portable path. Fills out_stream/out_index for global samples [global_start, global_start + n).
// `c` holds the counts as doubles (exact below 2**53); the caller writes them back.
void blend_loop_generic(const double* w, const double* target, double* c, int64_t K, int64_t segment_start,
                        int64_t global_start, int16_t* out_stream, int64_t* out_index, int64_t n) {
  std::vector<double> e(K);
  double* ep = e.data();
  for (int64_t j = 0; j < n; ++j) {
    const double dp = static_cast<double>(std::max<int64_t>(global_start + j, 1) - segment_start);
    for (int64_t i = 0; i < K; ++i) {
      const double err = (target[i] + w[i] * dp) - c[i];
      ep[i] = (w[i] > 0.0 || err > 0.0) ? err : kNegInf;
    }
    // Maximum, then the first index holding it: the stream that a left-to-right scan keeping the
    // first strict maximum (megatron's loop) returns.
    double m = ep[0];
    for (int64_t i = 1; i < K; ++i) m = std::max(m, ep[i]);
    int64_t best = 0;
    while (ep[best] != m) ++best;
    out_stream[j] = static_cast<int16_t>(best);
    out_index[j] = static_cast<int64_t>(c[best]);
    c[best] += 1.0;
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CPT_HAVE_AVX2_PATH 1
// AVX2 path for up to 4 * V streams: the same IEEE operations four streams at a time (mul, add, sub
// and max round exactly as their scalar forms, and nothing is fused), so its output is bit-identical
// to the portable path. Weights, targets, counts and errors stay in registers and the pick is
// branch-free; lanes past K are padding that can never win (target -inf, weight 0).
// Maximum of V vectors as a balanced tree (independent maxes, short dependency chain).
template <int V>
__attribute__((target("avx2"), always_inline)) inline __m256d max_tree(const __m256d* x) {
  if constexpr (V == 1) {
    return x[0];
  } else {
    return _mm256_max_pd(max_tree<V / 2>(x), max_tree<V - V / 2>(x + V / 2));
  }
}

// OR of V masks as a balanced tree.
template <int V>
__attribute__((always_inline)) inline uint32_t or_tree(const uint32_t* x) {
  if constexpr (V == 1) {
    return x[0];
  } else {
    return or_tree<V / 2>(x) | or_tree<V - V / 2>(x + V / 2);
  }
}

template <int V, bool kAnyZero>
__attribute__((target("avx2"))) void blend_loop_avx2(const double* w, const double* target, double* c,
                                                     int64_t K, int64_t segment_start, int64_t global_start,
                                                     int16_t* out_stream, int64_t* out_index, int64_t n) {
  alignas(32) double wb[4 * V], tb[4 * V], cb[4 * V];
  for (int i = 0; i < 4 * V; ++i) {
    wb[i] = i < K ? w[i] : 0.0;
    tb[i] = i < K ? target[i] : kNegInf;
    cb[i] = i < K ? c[i] : 0.0;
  }
  __m256d W[V], T[V], C[V];
  __m256i I[V];
  for (int v = 0; v < V; ++v) {
    W[v] = _mm256_load_pd(wb + 4 * v);
    T[v] = _mm256_load_pd(tb + 4 * v);
    C[v] = _mm256_load_pd(cb + 4 * v);
    I[v] = _mm256_setr_epi64x(4 * v, 4 * v + 1, 4 * v + 2, 4 * v + 3);
  }
  std::vector<int64_t> count(K);
  for (int64_t i = 0; i < K; ++i) count[i] = static_cast<int64_t>(c[i]);
  const __m256d zero = _mm256_setzero_pd();
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d neg_inf = _mm256_set1_pd(kNegInf);
  for (int64_t j = 0; j < n; ++j) {
    const __m256d vdp = _mm256_set1_pd(static_cast<double>(std::max<int64_t>(global_start + j, 1) - segment_start));
    __m256d E[V];
    for (int v = 0; v < V; ++v) {
      E[v] = _mm256_sub_pd(_mm256_add_pd(T[v], _mm256_mul_pd(W[v], vdp)), C[v]);
      if (kAnyZero) {
        const __m256d ok = _mm256_or_pd(_mm256_cmp_pd(W[v], zero, _CMP_GT_OQ), _mm256_cmp_pd(E[v], zero, _CMP_GT_OQ));
        E[v] = _mm256_blendv_pd(neg_inf, E[v], ok);
      }
    }
    const __m256d mt = max_tree<V>(E);
    __m256d m = _mm256_max_pd(mt, _mm256_permute2f128_pd(mt, mt, 1));
    m = _mm256_max_pd(m, _mm256_permute_pd(m, 0x5));
    __m256d EQ[V];
    uint32_t bits[V];
    for (int v = 0; v < V; ++v) {
      EQ[v] = _mm256_cmp_pd(E[v], m, _CMP_EQ_OQ);
      bits[v] = static_cast<uint32_t>(_mm256_movemask_pd(EQ[v])) << (4 * v);
    }
    const uint32_t all = or_tree<V>(bits);
    const int64_t best = __builtin_ctz(all);
    if (__builtin_expect((all & (all - 1)) == 0, 1)) {
      // one stream holds the maximum: its equality mask is the one-hot update (no index round trip)
      for (int v = 0; v < V; ++v) C[v] = _mm256_add_pd(C[v], _mm256_and_pd(EQ[v], one));
    } else {
      const __m256i vb = _mm256_set1_epi64x(best);
      for (int v = 0; v < V; ++v) {
        C[v] = _mm256_add_pd(C[v], _mm256_and_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(I[v], vb)), one));
      }
    }
    out_stream[j] = static_cast<int16_t>(best);
    out_index[j] = count[best]++;
  }
  for (int64_t i = 0; i < K; ++i) c[i] = static_cast<double>(count[i]);
}

using BlendFn = void (*)(const double*, const double*, double*, int64_t, int64_t, int64_t, int16_t*, int64_t*,
                         int64_t);

template <int V>
BlendFn pick_avx2(bool any_zero) {
  return any_zero ? &blend_loop_avx2<V, true> : &blend_loop_avx2<V, false>;
}

// The register-resident AVX2 loop for K <= 32 streams, or nullptr.
BlendFn avx2_loop_for(int64_t K, bool any_zero) {
  switch ((K + 3) / 4) {
    case 1: return pick_avx2<1>(any_zero);
    case 2: return pick_avx2<2>(any_zero);
    case 3: return pick_avx2<3>(any_zero);
    case 4: return pick_avx2<4>(any_zero);
    case 5: return pick_avx2<5>(any_zero);
    case 6: return pick_avx2<6>(any_zero);
    case 7: return pick_avx2<7>(any_zero);
    case 8: return pick_avx2<8>(any_zero);
    default: return nullptr;
  }
}
#endif

// Fills out_stream/out_index for global samples [global_start, global_start + n); updates counts.
void blend_loop(const double* w, const double* target, int64_t* counts, int64_t K, int64_t segment_start,
                int64_t global_start, int16_t* out_stream, int64_t* out_index, int64_t n, bool allow_simd) {
  std::vector<double> c(K);
  for (int64_t i = 0; i < K; ++i) c[i] = static_cast<double>(counts[i]);
#ifdef CPT_HAVE_AVX2_PATH
  bool any_zero = false;
  for (int64_t i = 0; i < K; ++i) any_zero = any_zero || !(w[i] > 0.0);
  BlendFn fast = allow_simd && __builtin_cpu_supports("avx2") ? avx2_loop_for(K, any_zero) : nullptr;
  if (fast != nullptr) {
    fast(w, target, c.data(), K, segment_start, global_start, out_stream, out_index, n);
  } else {
    blend_loop_generic(w, target, c.data(), K, segment_start, global_start, out_stream, out_index, n);
  }
#else
  (void)allow_simd;
  blend_loop_generic(w, target, c.data(), K, segment_start, global_start, out_stream, out_index, n);
#endif
  for (int64_t i = 0; i < K; ++i) counts[i] = static_cast<int64_t>(c[i]);
}

void blend_segment(const py::array_t<double, 0>& weights, const py::array_t<double, 0>& targets,
                   py::array_t<int64_t, 0>& counts, int64_t segment_start, int64_t global_start,
                   py::array_t<int16_t, 0>& out_stream, py::array_t<int64_t, 0>& out_index, bool simd) {
  // The Python face (cpt.sampling.blending) validates values; here only what memory safety needs.
  const int64_t K = weights.size();
  if (K < 1 || targets.size() != K || counts.size() != K) {
    throw std::invalid_argument("blend_segment: weights, targets and counts must have one entry per stream");
  }
  if (out_stream.size() != out_index.size()) {
    throw std::invalid_argument("blend_segment: out_stream and out_index must have the same length");
  }
  if (weights.ndim() != 1 || targets.ndim() != 1 || counts.ndim() != 1 || out_stream.ndim() != 1 ||
      out_index.ndim() != 1) {
    throw std::invalid_argument("blend_segment: all arrays must be one-dimensional");
  }
  const auto c_contig = py::array::c_style;
  for (const py::array* a : {static_cast<const py::array*>(&weights), static_cast<const py::array*>(&targets),
                             static_cast<const py::array*>(&counts), static_cast<const py::array*>(&out_stream),
                             static_cast<const py::array*>(&out_index)}) {
    if (!(a->flags() & c_contig)) throw std::invalid_argument("blend_segment: arrays must be C-contiguous");
  }
  const double* w = weights.data();
  const double* t = targets.data();
  int64_t* c = counts.mutable_data();
  int16_t* os = out_stream.mutable_data();
  int64_t* oi = out_index.mutable_data();
  const int64_t n = out_stream.size();
  py::gil_scoped_release release;
  blend_loop(w, t, c, K, segment_start, global_start, os, oi, n, simd);
}

}  // namespace

void register_blending(py::module_& m) {
  m.def("blend_segment", &blend_segment, py::arg("weights"), py::arg("targets"), py::arg("counts"),
        py::arg("segment_start"), py::arg("global_start"), py::arg("out_stream"), py::arg("out_index"), py::arg("simd") = true,
        "Fill out_stream/out_index with the next len(out_stream) blended samples from global_start; "
        "counts (int64, per stream) are updated in place; simd=False forces the portable path. See cpt/sampling/blending.py.");
}

}  // namespace cpt
