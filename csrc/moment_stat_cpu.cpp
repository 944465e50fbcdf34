// CPU implementation of moment_stat and its backward, per block of 16 columns (at::parallel_for), each
// one pass over the rows in their (B, N, K) layout with an inner loop over the 16 contiguous columns that
// the compiler unrolls and vectorises (the power and the polynomial degree are template arguments).
// Forward: the power sums of the values shifted by the first row, in double, then per column the
// statistic and its gradient polynomial's coefficients (moment_stat.h). Backward: that polynomial times
// the incoming gradient at every row.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <utility>

#include "moment_stat.h"

namespace fused_sigreg {
namespace {

constexpr int64_t kColumns = 16;  // columns per task: one cache line of float32 per row
using Block = std::array<double, kColumns>;
using Sums = std::array<Block, moment_stat::kMaxOrder + 1>;  // [q][j]: sum_i d^q of column j

// One row segment of a task's columns as float32, zero-padded past the last column (a zero shifted by
// a zero centre adds nothing to any power sum).
inline const float* row_segment(const float* x, int64_t w, std::array<float, kColumns>& pad) {
  if (w == kColumns) return x;
  pad.fill(0.0f);
  std::copy(x, x + w, pad.begin());
  return pad.data();
}

// T[q][j] += d^q, q = 1..P, over the rows; P a compile-time constant so that the inner loops over the
// 16 columns unroll and vectorise.
template <int P>
void power_sums(const float* x, int64_t N, int64_t K, int64_t w, const std::array<float, kColumns>& c, Sums& T) {
  std::array<float, kColumns> pad;
  for (int64_t i = 0; i < N; ++i) {
    const float* r = row_segment(x + i * K, w, pad);
    Block d, dp;
    for (int64_t j = 0; j < kColumns; ++j) dp[j] = d[j] = static_cast<double>(r[j] - c[j]);
    for (int q = 1; q <= P; ++q) {
      for (int64_t j = 0; j < kColumns; ++j) {
        T[q][j] += dp[j];
        dp[j] *= d[j];
      }
    }
  }
}

// g = go * sum_q a[q] d^q (Horner), D coefficients.
template <int D>
void gradient(const float* x, float* g, int64_t N, int64_t K, int64_t w, const std::array<float, kColumns>& c,
              const Sums& a, const Block& go) {
  std::array<float, kColumns> pad;
  for (int64_t i = 0; i < N; ++i) {
    const float* r = row_segment(x + i * K, w, pad);
    Block acc;
    for (int64_t j = 0; j < kColumns; ++j) {
      const double d = static_cast<double>(r[j] - c[j]);
      double v = a[D - 1][j];
      for (int q = D - 2; q >= 0; --q) v = v * d + a[q][j];
      acc[j] = v * go[j];
    }
    for (int64_t j = 0; j < w; ++j) g[i * K + j] = static_cast<float>(acc[j]);
  }
}

// The template instance for a runtime order 1..kMaxOrder.
template <template <int> class Fn, int P = 1, class... Args>
void with_order(int64_t order, Args&&... args) {
  if constexpr (P <= moment_stat::kMaxOrder) {
    if (order == P) return Fn<P>::run(std::forward<Args>(args)...);
    with_order<Fn, P + 1>(order, std::forward<Args>(args)...);
  }
}
template <int P>
struct PowerSums {
  template <class... Args>
  static void run(Args&&... args) { power_sums<P>(std::forward<Args>(args)...); }
};
template <int D>
struct Gradient {
  template <class... Args>
  static void run(Args&&... args) { gradient<D>(std::forward<Args>(args)...); }
};

void check_samples(const at::Tensor& proj) {
  TORCH_CHECK(proj.device().is_cpu() && proj.scalar_type() == at::kFloat && proj.dim() == 3,
              "proj must be a (B, N, K) float32 CPU tensor, got ", proj.scalar_type(), " ", proj.sizes(), " on ",
              proj.device());
  TORCH_CHECK(proj.size(1) >= 1, "proj needs at least one row, got N = ", proj.size(1));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> moment_stat_cpu(const at::Tensor& proj, int64_t statistic,
                                                               int64_t k_max, bool closed) {
  check_samples(proj);
  TORCH_CHECK(statistic >= 0 && statistic <= static_cast<int64_t>(MomentStatistic::kExtendedJarqueBera),
              "statistic must be an id 0..2, got ", statistic);
  const auto stat = static_cast<MomentStatistic>(statistic);
  TORCH_CHECK(stat != MomentStatistic::kMoments || (k_max >= 1 && k_max <= moment_stat::kMaxOrder),
              "k_max must be in [1, ", moment_stat::kMaxOrder, "], got ", k_max);
  const auto p = proj.contiguous();
  const int64_t B = p.size(0), N = p.size(1), K = p.size(2);
  const int64_t P = moment_stat::order(stat, k_max);
  const int64_t degree = moment_stat::degree(stat, k_max);
  auto value = at::empty({B, K}, p.options());
  auto coef = at::empty({B, degree, K}, p.options().dtype(at::kDouble));
  auto centre = at::empty({B, K}, p.options());
  if (B == 0 || K == 0) return {value, coef, centre};
  const bool shifted = moment_stat::centred(stat);
  const double n = static_cast<double>(N);
  const float* x_in = p.data_ptr<float>();
  float* v_out = value.data_ptr<float>();
  double* a_out = coef.data_ptr<double>();
  float* c_out = centre.data_ptr<float>();
  const int64_t blocks = (K + kColumns - 1) / kColumns;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, k0 = (task % blocks) * kColumns;
      const int64_t w = std::min(kColumns, K - k0);
      const float* x = x_in + b * N * K + k0;
      std::array<float, kColumns> c{};
      if (shifted) std::copy(x, x + w, c.begin());  // the first row: deviations on the spread's scale
      Sums T{};
      with_order<PowerSums>(P, x, N, K, w, c, T);
      for (int64_t j = 0; j < w; ++j) {
        std::array<double, moment_stat::kMaxOrder + 1> t{};
        std::array<double, moment_stat::kMaxOrder> a{};
        for (int64_t q = 1; q <= P; ++q) t[q] = T[q][j];
        const double v = shifted ? moment_stat::central(stat, t.data(), n, c[j], closed, a.data())
                                 : moment_stat::moments(t.data(), n, k_max, a.data());
        for (int64_t q = 0; q < degree; ++q) a_out[(b * degree + q) * K + k0 + j] = a[q];
        v_out[b * K + k0 + j] = static_cast<float>(v);
        c_out[b * K + k0 + j] = c[j];
      }
    }
  });
  return {value, coef, centre};
}

at::Tensor moment_stat_backward_cpu(const at::Tensor& proj, const at::Tensor& coef, const at::Tensor& centre,
                                    const at::Tensor& grad_out) {
  check_samples(proj);
  const int64_t B = proj.size(0), N = proj.size(1), K = proj.size(2);
  TORCH_CHECK(coef.scalar_type() == at::kDouble && coef.dim() == 3 && coef.size(0) == B && coef.size(2) == K &&
                  coef.size(1) >= 1 && coef.size(1) <= moment_stat::kMaxOrder,
              "coef must be float64 (B, degree, K) = (", B, ", 1..", moment_stat::kMaxOrder, ", ", K, "), got ",
              coef.scalar_type(), " ", coef.sizes());
  for (const auto* t : {&centre, &grad_out})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->dim() == 2 && t->size(0) == B && t->size(1) == K,
                "centre and grad_out must be float32 (B, K) = (", B, ", ", K, "), got ", t->scalar_type(), " ",
                t->sizes());
  const auto p = proj.contiguous();
  const auto a = coef.contiguous();
  const auto c_in = centre.contiguous();
  const auto go_in = grad_out.contiguous();
  auto grad = at::empty({B, N, K}, p.options());
  const int64_t degree = a.size(1);
  const float* x_in = p.data_ptr<float>();
  const double* a_in = a.data_ptr<double>();
  const float* c_ptr = c_in.data_ptr<float>();
  const float* go_ptr = go_in.data_ptr<float>();
  float* g_out = grad.data_ptr<float>();
  const int64_t blocks = (K + kColumns - 1) / kColumns;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, k0 = (task % blocks) * kColumns;
      const int64_t w = std::min(kColumns, K - k0);
      std::array<float, kColumns> c{};
      Block go{};
      Sums coef_block{};  // [q][j]; zero past the last column
      for (int64_t j = 0; j < w; ++j) {
        c[j] = c_ptr[b * K + k0 + j];
        go[j] = go_ptr[b * K + k0 + j];
        for (int64_t q = 0; q < degree; ++q) coef_block[q][j] = a_in[(b * degree + q) * K + k0 + j];
      }
      with_order<Gradient>(degree, x_in + b * N * K + k0, g_out + b * N * K + k0, N, K, w, c, coef_block, go);
    }
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CPU, m) {
  m.impl("moment_stat", &moment_stat_cpu);
  m.impl("moment_stat_backward", &moment_stat_backward_cpu);
}

}  // namespace fused_sigreg
