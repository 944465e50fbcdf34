// CPU SIGReg stage: empirical characteristic function sums of projections and their backward,
// one pass each over P (V, N, K), knots walked with the angle-addition recurrence
// (one sin/cos pair per element instead of T). The projections themselves are matmuls done by
// the caller (MKL/OpenBLAS through at::matmul).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>
#include <vector>

namespace fused_sigreg {
namespace {

constexpr int64_t kLanes = 8;       // columns per vector: one AVX register of floats
// Rows (forward) and column chunks (backward) walked together: independent recurrences hide the
// multiply-add latency. 4 was picked by timing 1, 2 and 4 by hand on one AVX2 machine (not a repo command).
constexpr int64_t kRows = 4;
constexpr int64_t kChunks = 4;
constexpr int64_t kFlushRows = 128; // fp32 partial sums over this many rows, then added in double
// The recurrence's rounding error grows about linearly with the knot index; every kReseed knots the
// pair is recomputed from sin/cos of the knot's own angle, which bounds the error for any n_points.
// Not at the last knot: one more sin/cos per element for a single knot (at the default 17 knots it
// would double the sin/cos work) while the walk it would shorten is only one step longer.
// The Triton kernels (kernels/sigreg_fused.py RESEED) and tools/numerics.py use the same rule.
constexpr int64_t kReseed = 16;

// kLanes floats as one value (GCC/Clang vector extension), so that the recurrence's state stays in
// vector registers. Every function taking or returning one is internal and inlined: no ABI boundary,
// so GCC's notes on the vector-passing ABI do not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(kLanes * sizeof(int32_t))));

// The passes are compiled twice where the toolchain supports function multiversioning: for x86-64-v3
// (AVX2 + FMA) and the baseline; the loader picks the clone the CPU can run (glibc ifunc).
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define FUSED_SIGREG_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FUSED_SIGREG_MULTIVERSION
#endif
#define FUSED_SIGREG_INLINE inline __attribute__((always_inline))

FUSED_SIGREG_INLINE vfloat splat(float v) { return vfloat{} + v; }

// The first w lanes from p, the rest 0 (the last chunk of a row).
FUSED_SIGREG_INLINE vfloat load(const float* p, int64_t w) {
  vfloat v{};
  std::memcpy(&v, p, static_cast<size_t>(w) * sizeof(float));
  return v;
}

FUSED_SIGREG_INLINE void store(float* p, const vfloat& v, int64_t w) {
  std::memcpy(p, &v, static_cast<size_t>(w) * sizeof(float));
}

// libm's sincosf for the lanes the polynomial does not cover (|angle| > 2^13, infinities, NaN), so
// that NaN propagates as in the reference. Out of line: it is the rare path.
__attribute__((noinline)) void sincos_slow(const float* x, float* sin_out, float* cos_out) {
  for (int64_t i = 0; i < kLanes; ++i)
    if (!(std::fabs(x[i]) <= 8192.0f)) ::sincosf(x[i], &sin_out[i], &cos_out[i]);
}

// sin and cos of kLanes angles: reduction by pi/2 in three parts (Cody-Waite) and the
// single-precision minimax polynomials of Cephes' sinf/cosf on [-pi/4, pi/4] (errors of a few ulp).
FUSED_SIGREG_INLINE void sincos_v(const vfloat& x, vfloat& sin_out, vfloat& cos_out) {
  const vfloat y = x * 0.63661977236758134f;  // 2 / pi
  const vint n = __builtin_convertvector(y + (y >= 0.0f ? splat(0.5f) : splat(-0.5f)), vint);
  const vfloat fn = __builtin_convertvector(n, vfloat);
  const vfloat r = ((x - fn * 1.5703125f) - fn * 4.837512969970703125e-4f) - fn * 7.549789948768648e-8f;
  const vfloat z = r * r;
  const vfloat sp = r + r * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
  const vfloat cp = 1.0f - 0.5f * z + z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
  const vint q = n & 3;
  const vfloat sv = (q & 1) != 0 ? cp : sp;
  const vfloat cv = (q & 1) != 0 ? sp : cp;
  sin_out = (q & 2) != 0 ? -sv : sv;
  cos_out = ((q + 1) & 2) != 0 ? -cv : cv;
  const vint fast = (x <= 8192.0f) & (x >= -8192.0f);  // false for NaN
  bool all_fast = true;
  for (int64_t i = 0; i < kLanes; ++i) all_fast &= fast[i] != 0;
  if (!all_fast) {  // through arrays, so that the vectors themselves never need an address
    float xa[kLanes], sa[kLanes], ca[kLanes];
    std::memcpy(xa, &x, sizeof(xa));
    std::memcpy(sa, &sin_out, sizeof(sa));
    std::memcpy(ca, &cos_out, sizeof(ca));
    sincos_slow(xa, sa, ca);
    std::memcpy(&sin_out, sa, sizeof(sa));
    std::memcpy(&cos_out, ca, sizeof(ca));
  }
}

void check_proj(const at::Tensor& p) {
  TORCH_CHECK(p.device().is_cpu() && p.scalar_type() == at::kFloat && p.dim() == 3,
              "proj must be a float32 CPU tensor (V, N, K), got ", p.scalar_type(), " ", p.sizes(), " on ", p.device());
}

// Adds cos / sin(j d p) of R consecutive rows (w of kLanes columns real, the rest p = 0) to part[j] /
// part[T + j], the R rows summed first.
template <int R>
FUSED_SIGREG_INLINE void sum_rows(const float* rows, int64_t K, int64_t T, float d, int64_t w, vfloat* part) {
  vfloat p[R], c[R], s[R], c1[R], s1[R];
  for (int r = 0; r < R; ++r) {
    p[r] = load(rows + r * K, w);
    sincos_v(d * p[r], s1[r], c1[r]);
    c[r] = splat(1.0f);
    s[r] = vfloat{};
  }
  for (int64_t j = 0; j < T; ++j) {
    if (j > 0 && j % kReseed == 0 && j + 1 < T)
      for (int r = 0; r < R; ++r) sincos_v((static_cast<float>(j) * d) * p[r], s[r], c[r]);
    vfloat cs = c[0], ss = s[0];
    for (int r = 1; r < R; ++r) {
      cs += c[r];
      ss += s[r];
    }
    part[j] += cs;
    part[T + j] += ss;
    for (int r = 0; r < R; ++r) {
      const vfloat cn = c[r] * c1[r] - s[r] * s1[r];
      s[r] = s[r] * c1[r] + c[r] * s1[r];
      c[r] = cn;
    }
  }
}

// One task of ecf_sums / ecf_stat: the T knot sums of kLanes columns (w of them real) over all N rows,
// in order, into acc (2 T kLanes doubles: T cos then T sin). part: 2 T fp32 partial sums.
FUSED_SIGREG_MULTIVERSION
void sums_task(const float* in, int64_t N, int64_t K, int64_t T, float d, int64_t w, vfloat* part, double* acc) {
  std::fill(acc, acc + 2 * T * kLanes, 0.0);
  for (int64_t n0 = 0; n0 < N; n0 += kFlushRows) {
    const int64_t n1 = std::min(N, n0 + kFlushRows);
    std::fill(part, part + 2 * T, vfloat{});
    int64_t n = n0;
    for (; n + kRows <= n1; n += kRows) sum_rows<kRows>(in + n * K, K, T, d, w, part);
    for (; n < n1; ++n) sum_rows<1>(in + n * K, K, T, d, w, part);
    for (int64_t e = 0; e < 2 * T; ++e)
      for (int64_t i = 0; i < kLanes; ++i) acc[e * kLanes + i] += part[e][i];
  }
}

// Runs task(v, k0, w, part, acc) for every kLanes-column block of every view, blocks spread over
// threads; each block's result does not depend on the thread count.
template <typename Task>
void for_each_column_block(int64_t V, int64_t K, int64_t T, const Task& task) {
  const int64_t col_blocks = (K + kLanes - 1) / kLanes;
  at::parallel_for(0, V * col_blocks, 1, [&](int64_t begin, int64_t end) {
    // new[] of the aligned vector type (std::vector<vfloat> would drop the type's alignment)
    std::unique_ptr<vfloat[]> part(new vfloat[2 * T]);
    std::vector<double> acc(2 * T * kLanes);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t v = b / col_blocks, k0 = (b % col_blocks) * kLanes;
      task(v, k0, std::min(kLanes, K - k0), part.get(), acc.data());
    }
  });
}

// sums (V, 2, T, K): sums[v, 0, j, k] = sum_n cos(j delta p[v, n, k]), sums[v, 1, j, k] the same with sin.
// Each task owns kLanes columns of one view and walks all rows in order: the result does not depend
// on the thread count.
at::Tensor ecf_sums_cpu(const at::Tensor& proj, double delta, int64_t n_points) {
  check_proj(proj);
  TORCH_CHECK(n_points >= 2, "n_points must be >= 2, got ", n_points);
  const auto p = proj.contiguous();
  const int64_t V = p.size(0), N = p.size(1), K = p.size(2), T = n_points;
  auto sums = at::empty({V, 2, T, K}, p.options());
  const float* in = p.data_ptr<float>();
  float* out = sums.data_ptr<float>();
  const float d = static_cast<float>(delta);
  for_each_column_block(V, K, T, [&](int64_t v, int64_t k0, int64_t w, vfloat* part, double* acc) {
    sums_task(in + v * N * K + k0, N, K, T, d, w, part, acc);
    float* out_c = out + (v * 2 + 0) * T * K + k0;
    float* out_s = out + (v * 2 + 1) * T * K + k0;
    for (int64_t j = 0; j < T; ++j)
      for (int64_t i = 0; i < w; ++i) {
        out_c[j * K + i] = static_cast<float>(acc[j * kLanes + i]);
        out_s[j * K + i] = static_cast<float>(acc[(T + j) * kLanes + i]);
      }
  });
  return sums;
}

void check_knots(const at::Tensor& q, const char* name, int64_t T) {
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kFloat && q.dim() == 1 && q.size(0) == T,
              name, " must be a float32 CPU tensor (", T, ",), got ", q.scalar_type(), " ", q.sizes(), " on ",
              q.device());
}

// SIGReg's statistic straight from the knot sums, with what its backward needs (csrc/ops.cpp).
// From the fp64 sums of each column block: C_j = sum cos / N, S_j = sum sin / N,
// stat = N sum_j w_j ((C_j - phi_j)^2 + S_j^2), and the coefficients of dstat/dp (stat's factor N
// cancels the 1/N of dC/dp and dS/dp): cos: 2 w_j t_j S_j, sin: -2 w_j t_j (C_j - phi_j).
std::tuple<at::Tensor, at::Tensor> ecf_stat_cpu(const at::Tensor& proj, double delta, const at::Tensor& t,
                                                const at::Tensor& phi, const at::Tensor& weights) {
  check_proj(proj);
  const int64_t T = t.numel();
  TORCH_CHECK(T >= 2, "t must hold n_points >= 2 knots, got ", T);
  check_knots(t, "t", T);
  check_knots(phi, "phi", T);
  check_knots(weights, "weights", T);
  const auto p = proj.contiguous();
  const int64_t V = p.size(0), N = p.size(1), K = p.size(2);
  auto stats = at::empty({V, K}, p.options());
  auto base = at::empty({V, 2, T, K}, p.options());
  const float* in = p.data_ptr<float>();
  const auto tc = t.contiguous(), pc = phi.contiguous(), wc = weights.contiguous();
  const float *tt = tc.data_ptr<float>(), *ph = pc.data_ptr<float>(), *wt = wc.data_ptr<float>();
  float* st = stats.data_ptr<float>();
  float* bs = base.data_ptr<float>();
  const float d = static_cast<float>(delta);
  const double n = static_cast<double>(N);
  for_each_column_block(V, K, T, [&](int64_t v, int64_t k0, int64_t w, vfloat* part, double* acc) {
    sums_task(in + v * N * K + k0, N, K, T, d, w, part, acc);
    float* base_c = bs + (v * 2 + 0) * T * K + k0;
    float* base_s = bs + (v * 2 + 1) * T * K + k0;
    for (int64_t i = 0; i < w; ++i) {
      double total = 0.0;
      for (int64_t j = 0; j < T; ++j) {
        const double err = acc[j * kLanes + i] / n - ph[j], sine = acc[(T + j) * kLanes + i] / n;
        total += wt[j] * (err * err + sine * sine);
        const double scale = 2.0 * wt[j] * tt[j];
        base_c[j * K + i] = static_cast<float>(scale * sine);
        base_s[j * K + i] = static_cast<float>(-scale * err);
      }
      st[v * K + k0 + i] = static_cast<float>(total * n);
    }
  });
  return {stats, base};
}

// R consecutive chunks of kLanes columns of one row, starting at column k0 (w columns real in the
// last chunk, past them p = 0 and coefficients 0): out = sum_j wc[j] cos(j d p) + ws[j] sin(j d p).
// The chunks are read before they are written, so out may be in.
template <int R>
FUSED_SIGREG_INLINE void grad_chunks(const float* in, float* out, const float* wc, const float* ws, int64_t K,
                                     int64_t T, float d, int64_t w) {
  vfloat p[R], c[R], s[R], c1[R], s1[R], acc[R];
  for (int r = 0; r < R; ++r) {
    p[r] = load(in + r * kLanes, r + 1 < R ? kLanes : w);
    sincos_v(d * p[r], s1[r], c1[r]);
    c[r] = splat(1.0f);
    s[r] = vfloat{};
    acc[r] = vfloat{};
  }
  for (int64_t j = 0; j < T; ++j) {
    if (j > 0 && j % kReseed == 0 && j + 1 < T)
      for (int r = 0; r < R; ++r) sincos_v((static_cast<float>(j) * d) * p[r], s[r], c[r]);
    for (int r = 0; r < R; ++r) {
      const int64_t wr = r + 1 < R ? kLanes : w;
      acc[r] += load(wc + j * K + r * kLanes, wr) * c[r] + load(ws + j * K + r * kLanes, wr) * s[r];
      const vfloat cn = c[r] * c1[r] - s[r] * s1[r];
      s[r] = s[r] * c1[r] + c[r] * s1[r];
      c[r] = cn;
    }
  }
  for (int r = 0; r < R; ++r) store(out + r * kLanes, acc[r], r + 1 < R ? kLanes : w);
}

// Rows [begin, end) of ecf_grad, each row's coefficients those of its view.
FUSED_SIGREG_MULTIVERSION
void grad_rows(const float* in, const float* w_all, float* out, int64_t begin, int64_t end, int64_t N, int64_t K,
               int64_t T, float d) {
  for (int64_t row_index = begin; row_index < end; ++row_index) {
    const int64_t v = row_index / N;
    const float* wc = w_all + (v * 2 + 0) * T * K;
    const float* ws = w_all + (v * 2 + 1) * T * K;
    const float* row_in = in + row_index * K;
    float* row_out = out + row_index * K;
    int64_t k0 = 0;
    for (; k0 + kChunks * kLanes <= K; k0 += kChunks * kLanes)
      grad_chunks<kChunks>(row_in + k0, row_out + k0, wc + k0, ws + k0, K, T, d, kLanes);
    for (; k0 < K; k0 += kLanes)
      grad_chunks<1>(row_in + k0, row_out + k0, wc + k0, ws + k0, K, T, d, std::min(kLanes, K - k0));
  }
}

// out (V, N, K) = sum_j coef[v, 0, j, k] cos(j delta p) + coef[v, 1, j, k] sin(j delta p). out may be
// proj itself: every chunk of a row is read into registers before it is written.
void ecf_grad_into(const at::Tensor& proj, const at::Tensor& coef, double delta, at::Tensor& out_tensor) {
  check_proj(proj);
  const int64_t V = proj.size(0), N = proj.size(1), K = proj.size(2);
  TORCH_CHECK(coef.scalar_type() == at::kFloat && coef.dim() == 4 && coef.size(0) == V && coef.size(1) == 2 &&
                  coef.size(3) == K,
              "coef must be float32 (V, 2, T, K) = (", V, ", 2, T, ", K, "), got ", coef.scalar_type(), " ", coef.sizes());
  const int64_t T = coef.size(2);
  TORCH_CHECK(proj.is_contiguous() && out_tensor.is_contiguous(), "proj and out must be contiguous");
  const auto cf = coef.contiguous();
  const float* in = proj.data_ptr<float>();
  const float* w_all = cf.data_ptr<float>();
  float* out = out_tensor.data_ptr<float>();
  const float d = static_cast<float>(delta);
  at::parallel_for(0, V * N, 16, [&](int64_t begin, int64_t end) { grad_rows(in, w_all, out, begin, end, N, K, T, d); });
}

at::Tensor ecf_grad_cpu(const at::Tensor& proj, const at::Tensor& coef, double delta) {
  const auto p = proj.contiguous();
  auto out = at::empty_like(p);
  ecf_grad_into(p, coef, delta, out);
  return out;
}

void ecf_grad_inplace_cpu(at::Tensor& proj, const at::Tensor& coef, double delta) {
  ecf_grad_into(proj, coef, delta, proj);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CPU, m) {
  m.impl("ecf_sums", &ecf_sums_cpu);
  m.impl("ecf_stat", &ecf_stat_cpu);
  m.impl("ecf_grad", &ecf_grad_cpu);
  m.impl("ecf_grad_", &ecf_grad_inplace_cpu);
}

}  // namespace fused_sigreg
