// CPU implementation of sort_stat: the radix sort of slice_sorter.h per slice (at::parallel_for), the
// CDF statistics' transcendental functions as vectorised ATen ops over all slices, then per slice the
// statistic and its gradient in rank order (sort_stat.h), the gradient scattered to the rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "slice_sorter.h"
#include "sort_stat.h"

namespace fused_sigreg {
namespace {

// The smallest sample each statistic is defined for here (entropy's spacings need 2m + 2 / m + 2).
int64_t min_samples(SortStatistic stat, int64_t m) {
  switch (stat) {
    case SortStatistic::kEntropyCentered:
      return 2 * m + 2;
    case SortStatistic::kEntropyRight:
      return m + 2;
    default:
      return 1;
  }
}

std::tuple<at::Tensor, at::Tensor> sort_stat_cpu(const at::Tensor& proj, int64_t statistic, double eps, int64_t m,
                                                 const std::optional<at::Tensor>& weights, bool closed) {
  check_proj(proj, "proj");
  TORCH_CHECK(statistic >= 0 && statistic <= static_cast<int64_t>(SortStatistic::kEntropyRight),
              "statistic must be an id 0..5, got ", statistic);
  const auto stat = static_cast<SortStatistic>(statistic);
  const int64_t S = proj.size(0), N = proj.size(1);
  TORCH_CHECK(m >= 1, "m must be >= 1, got ", m);
  TORCH_CHECK(N >= min_samples(stat, m), "this statistic needs N >= ", min_samples(stat, m), ", got ", N);
  TORCH_CHECK(eps > 0.0, "eps must be > 0, got ", eps);
  at::Tensor w;
  if (stat == SortStatistic::kShapiroWilk) {
    TORCH_CHECK(weights.has_value(), "Shapiro-Wilk needs its weights (N,)");
    w = weights->contiguous();
    TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == at::kFloat && w.dim() == 1 && w.size(0) == N,
                "weights must be float32 (N,) = (", N, ",) on the CPU, got ", w.scalar_type(), " ", w.sizes(),
                " on ", w.device());
  }
  const auto p = proj.contiguous();
  auto value = at::empty({S}, p.options());
  auto grad = at::empty({S, N}, p.options());
  // 1. sort every slice: sorted values and their original rows
  const auto [sorted, rows] = sort_slices(p);
  const float* sorted_out = sorted.data_ptr<float>();
  const int32_t* rows_out = rows.data_ptr<int32_t>();
  // 2. the transcendental functions of the CDF statistics, vectorised over the whole block
  sort_stat::Elementwise<float> ef{};
  sort_stat::Elementwise<double> ed{};
  at::Tensor cdf, pdf, log_cdf, log_ccdf;
  if (stat == SortStatistic::kCramerVonMises || stat == SortStatistic::kWatson) {
    cdf = (at::erf(sorted * sort_stat::kInvSqrt2) + 1.0) * 0.5;
    pdf = at::exp(sorted.square() * -0.5) * sort_stat::kInvSqrt2Pi;
    ef = {cdf.data_ptr<float>(), pdf.data_ptr<float>(), nullptr, nullptr};
  } else if (stat == SortStatistic::kAndersonDarling) {
    const auto x = sorted.to(at::kDouble);
    cdf = (at::erf(x * sort_stat::kInvSqrt2) + 1.0) * 0.5;
    pdf = at::exp(x.square() * -0.5) * sort_stat::kInvSqrt2Pi;
    log_cdf = at::log(cdf);
    log_ccdf = at::log1p(-cdf);
    ed = {cdf.data_ptr<double>(), pdf.data_ptr<double>(), log_cdf.data_ptr<double>(), log_ccdf.data_ptr<double>()};
  }
  const float* w_in = w.defined() ? w.data_ptr<float>() : nullptr;
  float* v_out = value.data_ptr<float>();
  float* g_out = grad.data_ptr<float>();
  // 3. per slice: the statistic and its gradient in rank order, scattered to the rows
  at::parallel_for(0, S, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> dsorted(N);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t at0 = element_offset(s, 0, N);
      const float* sv = sorted_out + at0;
      const auto slice_f = [&](const float* t) { return t ? t + at0 : nullptr; };
      const auto slice_d = [&](const double* t) { return t ? t + at0 : nullptr; };
      const sort_stat::Elementwise<float> e32{slice_f(ef.cdf), slice_f(ef.pdf), nullptr, nullptr};
      const sort_stat::Elementwise<double> e64{slice_d(ed.cdf), slice_d(ed.pdf), slice_d(ed.log_cdf),
                                               slice_d(ed.log_ccdf)};
      double v = 0.0;
      switch (stat) {
        case SortStatistic::kCramerVonMises:
        case SortStatistic::kWatson:
          v = sort_stat::cramer_von_mises(N, stat == SortStatistic::kWatson, e32, dsorted.data());
          break;
        case SortStatistic::kAndersonDarling:
          v = sort_stat::anderson_darling(sv, N, e64, closed, dsorted.data());
          break;
        case SortStatistic::kShapiroWilk:
          v = sort_stat::shapiro_wilk(sv, w_in, N, eps, dsorted.data());
          break;
        case SortStatistic::kEntropyCentered:
        case SortStatistic::kEntropyRight:
          v = sort_stat::entropy(sv, N, m, eps, stat == SortStatistic::kEntropyCentered, closed,
                                 dsorted.data());
          break;
      }
      v_out[s] = static_cast<float>(v);
      const int32_t* r = rows_out + at0;
      for (int64_t i = 0; i < N; ++i) g_out[element_offset(s, r[i], N)] = static_cast<float>(dsorted[i]);
    }
  });
  return {value, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CPU, m) {
  m.impl("sort_stat", &sort_stat_cpu);
}

}  // namespace fused_sigreg
