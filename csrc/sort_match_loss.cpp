// The sort-and-match loss (SWD, RDMReg) around the match op, each direction one call: at training sizes
// a call costs more in host dispatch than in arithmetic, and ~15 aten ops dispatched from Python cost more
// than from here (host time per fwd+bwd, benchmarks/host_time.py: SWD 186 -> 168 us, RDMReg 202 -> 188).
// Device-generic (CompositeExplicitAutograd): torch's own matmul and reductions, and fused_sigreg::sort_match
// through the dispatcher (CPU or CUDA). The numbers are those of the same aten calls made from Python.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace fused_sigreg {

namespace {

std::tuple<at::Tensor, at::Tensor> call_sort_match(const at::Tensor& proj, const at::Tensor& target) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fused_sigreg::sort_match", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>();
  return op.call(proj, target);
}

std::tuple<at::Tensor, at::Tensor> sort_match_loss(const at::Tensor& x, const at::Tensor& directions,
                                                   const at::Tensor& target) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kFloat, "x must be (V, N, D) float32, got ", x.scalar_type(),
              " ", x.sizes());
  TORCH_CHECK(directions.dim() == 2 && directions.size(0) == x.size(2), "directions must be (D, K) with D = ",
              x.size(2), ", got ", directions.sizes());
  // the reference's projection (x @ W in the compute dtype), laid out one slice per row: (V K, N)
  const auto proj = at::matmul(x, directions.to(at::kFloat));
  const auto slices = proj.transpose(-1, -2).reshape({-1, proj.size(-2)});
  auto [sum_sq, grad] = call_sort_match(slices, target);
  return {sum_sq.sum() / proj.numel(), grad};
}

// grad (V K, N) from sort_match_loss -> d(scale * grad_out * sum_sq) / dx (V, N, D): the gradient read in
// the match's layout as it is (a transposed view), grad_out multiplied into the smaller of it and W^T,
// and one batched matmul with W^T broadcast over the views that applies scale (beta = 0: its input only
// gives the shape).
at::Tensor sort_match_loss_backward(const at::Tensor& grad, const at::Tensor& directions, const at::Tensor& grad_out,
                                    double scale) {
  TORCH_CHECK(grad.dim() == 2 && directions.dim() == 2 && grad.size(0) % directions.size(1) == 0,
              "grad must be (V K, N) for directions (D, K) = ", directions.sizes(), ", got ", grad.sizes());
  const int64_t K = directions.size(1), V = grad.size(0) / K, N = grad.size(1);
  auto grad_proj = grad.view({V, K, N}).transpose(-1, -2);
  auto w = directions.to(grad.scalar_type()).t();
  if (grad.device().is_cpu()) {
    // On the CPU baddbmm applies alpha in a pass of its own, and a scaled copy of the gradient is another:
    // one GEMM on the match's layout as it is, then one in-place scale of its output, grad_out read on the
    // host (no device to wait for).
    return at::bmm(grad_proj, w.expand({V, K, w.size(1)})).mul_(grad_out.item<double>() * scale);
  }
  if (w.numel() <= grad_proj.numel()) {
    w = w * grad_out;
  } else {
    grad_proj = grad_proj * grad_out;
  }
  w = w.expand({V, K, w.size(1)});
  if (scale == 1.0) return at::bmm(grad_proj, w);
  return at::baddbmm(grad_proj.narrow(2, 0, 1).expand({V, N, w.size(2)}), grad_proj, w, /*beta=*/0.0,
                     /*alpha=*/scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CompositeExplicitAutograd, m) {
  m.impl("sort_match_loss", &sort_match_loss);
  m.impl("sort_match_loss_backward", &sort_match_loss_backward);
}

}  // namespace fused_sigreg
