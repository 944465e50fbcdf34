// CPU implementation of moment_stat: per block of columns (at::parallel_for), three passes over the
// rows in their (B, N, K) layout, each an inner loop over contiguous columns the compiler vectorises:
// the column sums (the centre), the power sums of the shifted values in double, and after the
// per-column finalize (moment_stat.h) the gradient polynomial written at every row.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>

#include "moment_stat.h"

namespace fused_sigreg {
namespace {

constexpr int64_t kColumns = 16;  // columns per task: one cache line of float32 per row

std::tuple<at::Tensor, at::Tensor> moment_stat_cpu(const at::Tensor& proj, int64_t statistic, int64_t k_max,
                                                   bool closed) {
  TORCH_CHECK(proj.device().is_cpu() && proj.scalar_type() == at::kFloat && proj.dim() == 3,
              "proj must be a (B, N, K) float32 CPU tensor, got ", proj.scalar_type(), " ", proj.sizes(), " on ",
              proj.device());
  TORCH_CHECK(statistic >= 0 && statistic <= static_cast<int64_t>(MomentStatistic::kExtendedJarqueBera),
              "statistic must be an id 0..2, got ", statistic);
  const auto stat = static_cast<MomentStatistic>(statistic);
  TORCH_CHECK(stat != MomentStatistic::kMoments || (k_max >= 1 && k_max <= moment_stat::kMaxOrder),
              "k_max must be in [1, ", moment_stat::kMaxOrder, "], got ", k_max);
  const auto p = proj.contiguous();
  const int64_t B = p.size(0), N = p.size(1), K = p.size(2);
  auto value = at::empty({B, K}, p.options());
  auto grad = at::empty({B, N, K}, p.options());
  if (B == 0 || K == 0) return {value, grad};
  TORCH_CHECK(N >= 1, "proj needs at least one row, got N = ", N);
  const int64_t P = moment_stat::order(stat, k_max);
  const bool centre = moment_stat::centred(stat);
  const double n = static_cast<double>(N);
  const float* x_in = p.data_ptr<float>();
  float* v_out = value.data_ptr<float>();
  float* g_out = grad.data_ptr<float>();
  const int64_t blocks = (K + kColumns - 1) / kColumns;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, k0 = (task % blocks) * kColumns;
      const int64_t w = std::min(kColumns, K - k0);
      const float* x = x_in + b * N * K + k0;
      float* g = g_out + b * N * K + k0;
      std::array<float, kColumns> c{};
      if (centre) {
        std::array<double, kColumns> sum{};
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < w; ++j) sum[j] += x[i * K + j];
        for (int64_t j = 0; j < w; ++j) c[j] = static_cast<float>(sum[j] / n);
      }
      // T[p][j] = sum_i d^p, p = 1..P
      std::array<std::array<double, kColumns>, moment_stat::kMaxOrder + 1> T{};
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = 0; j < w; ++j) {
          const double d = static_cast<double>(x[i * K + j] - c[j]);
          double dp = d;
          for (int64_t q = 1; q <= P; ++q) {
            T[q][j] += dp;
            dp *= d;
          }
        }
      }
      std::array<std::array<double, moment_stat::kMaxOrder>, kColumns> coef{};
      for (int64_t j = 0; j < w; ++j) {
        std::array<double, moment_stat::kMaxOrder + 1> t{};
        for (int64_t q = 1; q <= P; ++q) t[q] = T[q][j];
        const double v = centre ? moment_stat::central(stat, t.data(), n, c[j], closed, coef[j].data())
                                : moment_stat::moments(t.data(), n, k_max, coef[j].data());
        v_out[b * K + k0 + j] = static_cast<float>(v);
      }
      const int64_t degree = centre ? 4 : P;  // coefficients a_0 .. a_(degree - 1)
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = 0; j < w; ++j) {
          const double d = static_cast<double>(x[i * K + j] - c[j]);
          double acc = coef[j][degree - 1];
          for (int64_t q = degree - 2; q >= 0; --q) acc = acc * d + coef[j][q];
          g[i * K + j] = static_cast<float>(acc);
        }
      }
    }
  });
  return {value, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CPU, m) {
  m.impl("moment_stat", &moment_stat_cpu);
}

}  // namespace fused_sigreg
