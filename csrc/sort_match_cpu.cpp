// CPU implementations: a stable LSD radix sort per slice (at::parallel_for over slices) and the
// shared match epilogue from sort_match.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "slice_sorter.h"

namespace fused_sigreg {

void check_proj(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2, name, " must be (S, N), got ", t.sizes());
  TORCH_CHECK(t.size(1) <= INT32_MAX, name, ": N must fit in int32, got ", t.size(1));
}

namespace {

std::tuple<at::Tensor, at::Tensor> sort_match_cpu(const at::Tensor& proj, const at::Tensor& target) {
  check_proj(proj, "proj");
  const int64_t S = proj.size(0), N = proj.size(1);
  TORCH_CHECK(target.device().is_cpu() && target.scalar_type() == at::kFloat,
              "target must be a float32 CPU tensor, got ", target.scalar_type(), " on ", target.device());
  const bool per_slice = target.dim() == 2;
  TORCH_CHECK((target.dim() == 1 && target.size(0) == N) || (per_slice && target.size(0) == S && target.size(1) == N),
              "target must be (N,) = (", N, ",) or (S, N) = (", S, ", ", N, "), got ", target.sizes());
  const auto p = proj.contiguous();
  const auto t = target.contiguous();
  auto sum_sq = at::empty({S}, p.options());
  auto grad = at::empty({S, N}, p.options());
  const float* p_in = p.data_ptr<float>();
  const float* t_in = t.data_ptr<float>();
  float* sq_out = sum_sq.data_ptr<float>();
  float* g_out = grad.data_ptr<float>();
  at::parallel_for(0, S, 1, [&](int64_t begin, int64_t end) {
    SliceSorter sorter, target_sorter;
    for (int64_t s = begin; s < end; ++s) {
      sorter.sort(p_in + element_offset(s, 0, N), N);
      if (per_slice) target_sorter.sort(t_in + element_offset(s, 0, N), N);
      double acc = 0.0;  // one slice of squares summed in double: the order-free part of the loss
      for (int64_t i = 0; i < N; ++i) {
        const float tv = per_slice ? from_ordered_bits(target_sorter.keys[i]) : t_in[target_offset(s, i, N, false)];
        const MatchTerm term = match_term(from_ordered_bits(sorter.keys[i]), tv);
        acc += term.square;
        g_out[element_offset(s, sorter.rows[i], N)] = term.grad;
      }
      sq_out[s] = static_cast<float>(acc);
    }
  });
  return {sum_sq, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CPU, m) {
  m.impl("sort_match", &sort_match_cpu);
}

}  // namespace fused_sigreg
