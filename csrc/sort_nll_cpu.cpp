// CPU implementation of sort_nll: lejepa's per-sample order-statistic NLL (univariate.nll) of every slice in
// one pass. Each slice is sorted (slice_sorter.h), log Phi(+-x) is formed by vectorised ATen ops over the
// whole block in double (as Anderson-Darling's, sort_stat_cpu.cpp), and per slice each rank's loss and slope
// (sort_stat.h) are written where lejepa puts them: output i holds rank o[i]'s loss, o the sort permutation
// (the reference's gather by o). That output depends on the input row o[o[i]] only, so backward is one
// multiply and one gather: the op returns the slope at every output and, per input row, the output it feeds.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "slice_sorter.h"
#include "sort_stat.h"

namespace fused_sigreg {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> sort_nll_cpu(const at::Tensor& proj, const at::Tensor& constant,
                                                            const std::optional<at::Tensor>& cutoffs, bool closed) {
  check_proj(proj, "proj");
  const int64_t S = proj.size(0), N = proj.size(1);
  TORCH_CHECK(constant.device().is_cpu() && constant.scalar_type() == at::kFloat && constant.dim() == 1 &&
                  constant.size(0) == N,
              "constant must be float32 (N,) = (", N, ",) on the CPU, got ", constant.scalar_type(), " ",
              constant.sizes(), " on ", constant.device());
  at::Tensor bounds;
  if (cutoffs.has_value()) {
    bounds = cutoffs->contiguous();
    TORCH_CHECK(bounds.device().is_cpu() && bounds.scalar_type() == at::kFloat && bounds.dim() == 2 &&
                    bounds.size(0) == 2 && bounds.size(1) == N,
                "cutoffs must be float32 (2, N) = (2, ", N, ") on the CPU, got ", bounds.scalar_type(), " ",
                bounds.sizes(), " on ", bounds.device());
  }
  const auto p = proj.contiguous();
  const auto c = constant.contiguous();
  auto loss = at::empty({S, N}, p.options());
  auto slope = at::empty({S, N}, p.options());
  auto source = at::empty({S, N}, p.options().dtype(at::kLong));
  // 1. sort every slice
  const auto [sorted, rows] = sort_slices(p);
  const float* sorted_out = sorted.data_ptr<float>();
  const int32_t* rows_out = rows.data_ptr<int32_t>();
  // 2. Phi, the density and log Phi(+-x) of every sorted value, vectorised, in double: the loss sums
  // j log Phi(x) and (n - 1 - j) log Phi(-x), terms n times its size at the middle ranks
  const auto x = sorted.to(at::kDouble);
  const auto cdf = (at::erf(x * sort_stat::kInvSqrt2) + 1.0) * 0.5;
  const auto pdf = at::exp(x.square() * -0.5) * sort_stat::kInvSqrt2Pi;
  const auto log_cdf = at::log(cdf);
  const auto log_ccdf = at::log1p(-cdf);
  const double* cdf_in = cdf.data_ptr<double>();
  const double* pdf_in = pdf.data_ptr<double>();
  const double* lc_in = log_cdf.data_ptr<double>();
  const double* lcc_in = log_ccdf.data_ptr<double>();
  const float* c_in = c.data_ptr<float>();
  const float* lo = bounds.defined() ? bounds.data_ptr<float>() : nullptr;
  float* loss_out = loss.data_ptr<float>();
  float* slope_out = slope.data_ptr<float>();
  int64_t* source_out = source.data_ptr<int64_t>();
  // 3. per slice: each rank's loss and slope, then lejepa's order
  at::parallel_for(0, S, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> rank_loss(N), rank_slope(N);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t at0 = element_offset(s, 0, N);
      for (int64_t j = 0; j < N; ++j) {
        const int64_t e = at0 + j;
        const float v = sorted_out[e];
        const sort_stat::LogCdf a = sort_stat::log_norm_cdf(v, lc_in[e], cdf_in[e], pdf_in[e], closed);
        const sort_stat::LogCdf b = sort_stat::log_norm_cdf(-static_cast<double>(v), lcc_in[e], 1.0 - cdf_in[e],
                                                            pdf_in[e], closed);
        const sort_stat::LogCdf term = sort_stat::order_nll(v, j, N, c_in[j], a, b);
        // lejepa's masking (alpha < 0.5): NaN strictly inside the rank's central interval, no gradient there
        const bool masked = lo != nullptr && v > lo[j] && v < lo[N + j];
        rank_loss[j] = masked ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(term.value);
        rank_slope[j] = masked ? 0.0f : static_cast<float>(term.slope);
      }
      const int32_t* o = rows_out + at0;
      for (int64_t i = 0; i < N; ++i) {
        loss_out[at0 + i] = rank_loss[o[i]];
        slope_out[at0 + i] = rank_slope[o[i]];
        source_out[at0 + o[o[i]]] = i;  // input row o[o[i]] feeds output i (a permutation)
      }
    }
  });
  return {loss, slope, source};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CPU, m) {
  m.impl("sort_nll", &sort_nll_cpu);
}

}  // namespace fused_sigreg
