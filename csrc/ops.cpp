// Every op schema of the compiled extension (TORCH_LIBRARY) and the Python module that loads them;
// the CPU and CUDA files register implementations only (TORCH_LIBRARY_IMPL).
#include <Python.h>
#include <torch/library.h>

// `import fused_sigreg._C` loads this library; the op registrations below run at load time.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fused_sigreg, m) {
  // proj (S, N) float32 and target (N,) float32 (shared sorted quantiles) or (S, N) float32 (sorted
  // inside, per slice; each sorted ascending with -0 == +0, NaN last, ties in row order) -> (sum_sq (S,) float32, grad (S, N) float32): sum_sq[s] = sum_i (sort(proj[s])_i
  // - t_i)^2 and grad = d sum_sq[s] / d proj[s], written at the original positions.
  m.def("sort_match(Tensor proj, Tensor target) -> (Tensor, Tensor)");
  // x (V, N, D) float32, directions (D, K), target as sort_match's for proj (V K, N) = x @ W one slice per
  // row -> (loss () float32 = sum of sort_match's sums / (V N K), grad (V K, N) sort_match's gradient)
  // (csrc/sort_match_loss.cpp). The backward: grad, directions, grad_out () -> scale * grad_out * the
  // gradient in x (V, N, D) of those sums.
  m.def("sort_match_loss(Tensor x, Tensor directions, Tensor target) -> (Tensor, Tensor)");
  m.def("sort_match_loss_backward(Tensor grad, Tensor directions, Tensor grad_out, float scale) -> Tensor");
  // proj (S, N) float32, sorted per slice as sort_match does -> (value (S,) float32, grad (S, N) float32):
  // lejepa's EDF-family statistic of each slice and its gradient at the original positions (csrc/sort_stat.h).
  // statistic: 0 Cramer-von Mises, 1 Watson, 2 Anderson-Darling, 3 Shapiro-Wilk (weights (N,) float32,
  // eps), 4 / 5 entropy centred / right (m, eps). closed: the reference's clamps pass the gradient at
  // their bounds (torch's clamp did up to 2.11).
  m.def("sort_stat(Tensor proj, int statistic, float eps, int m, Tensor? weights, bool closed) -> (Tensor, Tensor)");
  // proj (S, N) float32 -> (loss, slope, source), (S, N) each: lejepa's per-sample order-statistic NLL of
  // every slice (csrc/sort_nll_cpu.cpp) in lejepa's order, d loss / d proj at the one row each output depends
  // on, and per row the output it feeds (int64; backward is (grad * slope).gather(1, source)). constant (N,)
  // float32: each rank's log multinomial constant; cutoffs (2, N) float32: each rank's central interval,
  // NaN strictly inside (alpha < 0.5), or None; closed as for sort_stat.
  m.def("sort_nll(Tensor proj, Tensor constant, Tensor? cutoffs, bool closed) -> (Tensor, Tensor, Tensor)");
  // proj (B, N, K) float32 -> (value (B, K) float32, coef (B, degree, K) float64, centre (B, K) float32):
  // lejepa's moment-family statistic of each column, and its gradient as the polynomial
  // sum_q coef[:, q] (proj - centre)^q (csrc/moment_stat.h). statistic: 0 Moments (k_max in [1, 16],
  // degree k_max), 1 VCReg, 2 Extended Jarque-Bera (degree 4); closed: the reference's clamp of the sd
  // passes the gradient at its bound.
  m.def("moment_stat(Tensor proj, int statistic, int k_max, bool closed) -> (Tensor, Tensor, Tensor)");
  // grad (B, N, K) float32 = grad_out (B, K)[:, None] * that polynomial at every row.
  m.def("moment_stat_backward(Tensor proj, Tensor coef, Tensor centre, Tensor grad_out) -> Tensor");
  // SIGReg's ECF stage (CPU). proj (V, N, K) float32 -> (V, 2, T, K) float32 sums over N of
  // cos / sin(j * delta * p), j < n_points.
  m.def("ecf_sums(Tensor proj, float delta, int n_points) -> Tensor");
  // SIGReg's statistic from those sums (N = proj.size(1), t / phi / weights the (T,) quadrature, t_j = j delta):
  // -> (stat (V, K) = N sum_j weights_j ((C_j - phi_j)^2 + S_j^2) with C, S the cos / sin means,
  //     base (V, 2, T, K): dstat/dp = sum_j base[:, 0, j] cos(t_j p) + base[:, 1, j] sin(t_j p))
  m.def("ecf_stat(Tensor proj, float delta, Tensor t, Tensor phi, Tensor weights) -> (Tensor, Tensor)");
  // proj (V, N, K), coef (V, 2, T, K) -> d (V, N, K) = sum_j coef[:, 0, j] cos(j delta p) + coef[:, 1, j] sin(j delta p).
  m.def("ecf_grad(Tensor proj, Tensor coef, float delta) -> Tensor");
  // the same, written over proj (contiguous): backward's dP takes the place of the saved P
  m.def("ecf_grad_(Tensor(a!) proj, Tensor coef, float delta) -> ()");
  // VISReg's centring (CPU): z (V, N, D) float32, mu (V, [1,] D) its mean over N -> (z - mu, its norm over N
  // (V, D)), both bit for bit torch's for D > 1.
  m.def("center_norm(Tensor z, Tensor mu) -> (Tensor, Tensor)");
  // VISReg's centre and scale terms (CPU). centered (V, N, D) float32 = z - mu, mu (V, [1,] D) the mean over N,
  // norm (V, D) = ||centered|| over N (torch's, as the reference's) -> (normalised = centered / sigma, terms () =
  // scale_weight * mean (sigma - 1)^2 + center_weight * mean mu^2, sigma (V, D) = norm / sqrt(N) + eps).
  m.def(
      "visreg_terms(Tensor centered, Tensor mu, Tensor norm, float eps, float scale_weight, float center_weight) -> "
      "(Tensor, Tensor, Tensor)");
  // grad_z (V, N, D) of terms * grad_out + <shape_factor * grad_normalised, normalised> with sigma held
  // constant in normalised (the reference's stop-gradient).
  m.def(
      "visreg_terms_backward(Tensor grad_normalised, Tensor centered, Tensor mu, Tensor sigma, Tensor norm, "
      "Tensor grad_out, float shape_factor, float scale_weight, float center_weight) -> Tensor");
}
