// CPU SIGReg stage: empirical characteristic function sums of projections and their backward,
// one pass each over P (V, N, K), knots walked with the angle-addition recurrence
// (one sin/cos pair per element instead of T). The projections themselves are matmuls done by
// the caller (MKL/OpenBLAS through at::matmul).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace fused_sigreg {
namespace {

constexpr int64_t kCols = 16;       // columns per task: one cache line of floats per row
constexpr int64_t kFlushRows = 128; // fp32 partial sums over this many rows, then added in double
// The recurrence's rounding error grows about linearly with the knot index; every kReseed knots the
// pair is recomputed from sin/cos of the knot's own angle, which bounds the error for any n_points.
// Not at the last knot: one more sin/cos per element for a single knot (at the default 17 knots it
// would double the sin/cos work) while the walk it would shorten is only one step longer.
// The Triton kernels (kernels/sigreg_ecf.py RESEED) and tools/numerics.py use the same rule.
constexpr int64_t kReseed = 16;

// sin and cos of kCols angles in a loop the compiler vectorises: reduction by pi/2 in three parts
// (Cody-Waite) and the single-precision minimax polynomials of Cephes' sinf/cosf on [-pi/4, pi/4]
// (errors of a few ulp). Angles beyond 2^13 rad, infinities and NaN go to libm's sincosf, so
// NaN propagates as in the reference.
inline void sincos_block(const float* theta, float* sin_out, float* cos_out) {
  bool slow = false;
  for (int64_t i = 0; i < kCols; ++i) {
    const float x = theta[i];
    const float y = x * 0.63661977236758134f;  // 2 / pi
    const int32_t n = static_cast<int32_t>(y + (y >= 0.0f ? 0.5f : -0.5f));
    const float fn = static_cast<float>(n);
    const float r = ((x - fn * 1.5703125f) - fn * 4.837512969970703125e-4f) - fn * 7.549789948768648e-8f;
    const float z = r * r;
    const float sp = r + r * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
    const float cp = 1.0f - 0.5f * z + z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
    const int32_t q = n & 3;
    const float sv = (q & 1) ? cp : sp;
    const float cv = (q & 1) ? sp : cp;
    sin_out[i] = (q & 2) ? -sv : sv;
    cos_out[i] = ((q + 1) & 2) ? -cv : cv;
    slow |= !(std::fabs(x) <= 8192.0f);
  }
  if (slow) {
    for (int64_t i = 0; i < kCols; ++i)
      if (!(std::fabs(theta[i]) <= 8192.0f)) ::sincosf(theta[i], &sin_out[i], &cos_out[i]);
  }
}

// (c, s) = (cos, sin)(j * d * p) of kCols values p: a recurrence restart at knot j.
inline void reseed_block(const float* p, int64_t w, float d, int64_t j, float* c, float* s) {
  const float jd = static_cast<float>(j) * d;
  float theta[kCols];
  for (int64_t i = 0; i < kCols; ++i) theta[i] = i < w ? jd * p[i] : 0.0f;
  sincos_block(theta, s, c);
}

void check_proj(const at::Tensor& p) {
  TORCH_CHECK(p.device().is_cpu() && p.scalar_type() == at::kFloat && p.dim() == 3,
              "proj must be a float32 CPU tensor (V, N, K), got ", p.scalar_type(), " ", p.sizes(), " on ", p.device());
}

// sums (V, 2, T, K): sums[v, 0, j, k] = sum_n cos(j delta p[v, n, k]), sums[v, 1, j, k] the same with sin.
// Each task owns kCols columns of one view and walks all rows in order: the result does not depend
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
  const int64_t col_blocks = (K + kCols - 1) / kCols;
  at::parallel_for(0, V * col_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> acc_c(T * kCols), acc_s(T * kCols);
    std::vector<float> part_c(T * kCols), part_s(T * kCols);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t v = task / col_blocks, k0 = (task % col_blocks) * kCols;
      const int64_t w = std::min(kCols, K - k0);
      std::fill(acc_c.begin(), acc_c.end(), 0.0);
      std::fill(acc_s.begin(), acc_s.end(), 0.0);
      for (int64_t n0 = 0; n0 < N; n0 += kFlushRows) {
        std::fill(part_c.begin(), part_c.end(), 0.0f);
        std::fill(part_s.begin(), part_s.end(), 0.0f);
        for (int64_t n = n0; n < std::min(N, n0 + kFlushRows); ++n) {
          const float* row = in + (v * N + n) * K + k0;
          // columns past K: angle 0 and start (0, 0), so they add nothing and are not stored
          float theta[kCols], c1[kCols], s1[kCols], c[kCols], s[kCols];
          for (int64_t i = 0; i < kCols; ++i) {
            theta[i] = i < w ? d * row[i] : 0.0f;
            c[i] = i < w ? 1.0f : 0.0f;
            s[i] = 0.0f;
          }
          sincos_block(theta, s1, c1);
          for (int64_t j = 0; j < T; ++j) {
            float* pc = part_c.data() + j * kCols;
            float* ps = part_s.data() + j * kCols;
            if (j > 0 && j % kReseed == 0 && j + 1 < T) reseed_block(row, w, d, j, c, s);  // columns past w: not stored
            for (int64_t i = 0; i < kCols; ++i) {
              pc[i] += c[i];
              ps[i] += s[i];
              const float cn = c[i] * c1[i] - s[i] * s1[i];
              s[i] = s[i] * c1[i] + c[i] * s1[i];
              c[i] = cn;
            }
          }
        }
        for (int64_t e = 0; e < T * kCols; ++e) {
          acc_c[e] += part_c[e];
          acc_s[e] += part_s[e];
        }
      }
      for (int64_t j = 0; j < T; ++j)
        for (int64_t i = 0; i < w; ++i) {
          out[((v * 2 + 0) * T + j) * K + k0 + i] = static_cast<float>(acc_c[j * kCols + i]);
          out[((v * 2 + 1) * T + j) * K + k0 + i] = static_cast<float>(acc_s[j * kCols + i]);
        }
    }
  });
  return sums;
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
  at::parallel_for(0, V * N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row_index = begin; row_index < end; ++row_index) {
      const int64_t v = row_index / N;
      const float* wc = w_all + (v * 2 + 0) * T * K;
      const float* ws = w_all + (v * 2 + 1) * T * K;
      const float* row = in + row_index * K;
      float* g = out + row_index * K;
      for (int64_t k0 = 0; k0 < K; k0 += kCols) {
        const int64_t w = std::min(kCols, K - k0);
        float theta[kCols], c1[kCols], s1[kCols], c[kCols], s[kCols], acc[kCols], cj[kCols], sj[kCols];
        for (int64_t i = 0; i < kCols; ++i) {
          theta[i] = i < w ? d * row[k0 + i] : 0.0f;
          c[i] = 1.0f;
          s[i] = 0.0f;
          acc[i] = 0.0f;
        }
        sincos_block(theta, s1, c1);
        for (int64_t j = 0; j < T; ++j) {
          if (j > 0 && j % kReseed == 0 && j + 1 < T) reseed_block(row + k0, w, d, j, c, s);  // past w: coefficients 0
          const float* cjp = wc + j * K + k0;
          const float* sjp = ws + j * K + k0;
          if (w < kCols) {  // the last chunk of a row: coefficients of columns past K read as 0
            for (int64_t i = 0; i < kCols; ++i) {
              cj[i] = i < w ? cjp[i] : 0.0f;
              sj[i] = i < w ? sjp[i] : 0.0f;
            }
            cjp = cj;
            sjp = sj;
          }
          for (int64_t i = 0; i < kCols; ++i) {
            acc[i] += cjp[i] * c[i] + sjp[i] * s[i];
            const float cn = c[i] * c1[i] - s[i] * s1[i];
            s[i] = s[i] * c1[i] + c[i] * s1[i];
            c[i] = cn;
          }
        }
        for (int64_t i = 0; i < w; ++i) g[k0 + i] = acc[i];
      }
    }
  });
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
  m.impl("ecf_grad", &ecf_grad_cpu);
  m.impl("ecf_grad_", &ecf_grad_inplace_cpu);
}

}  // namespace fused_sigreg
