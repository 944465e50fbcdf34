// CPU implementation of VISReg's centring, its centre and scale terms, the normalised embeddings its shape
// term slices, and their backward. Every pass runs per task over one view and a block of columns, walking
// the rows of the (V, N, D) layout: each column is then reduced in row order by one thread, so the sums do
// not depend on the thread count, and a block's row segments are long enough to stream (a 16-column block
// of a D = 1024 row touched one cache line per 4 KiB page and ran at TLB speed).
// center_norm reduces each column in torch's CPU order for norm(dim=-2) (float32, row after row), so the
// normalised values, and hence the shape term's ranks, are the reference's bit for bit (tested against
// torch.norm on both torch versions); sigma and the normalised values use the reference's float32 operations.
// The other sums over rows and over columns are in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace fused_sigreg {
namespace {

constexpr int64_t kColumns = 256;  // the widest block: 1 KiB of float32 per row
using Block = std::array<double, kColumns>;

// Columns per task: at least two tasks per thread where the shape allows, each block a whole number of
// cache lines (16 columns) and at most kColumns.
int64_t block_width(int64_t V, int64_t D) {
  const int64_t per_view = std::max<int64_t>(1, (2 * at::get_num_threads() + V - 1) / V);
  const int64_t width = ((D + per_view - 1) / per_view + 15) / 16 * 16;
  return std::clamp<int64_t>(width, 16, kColumns);
}

void check_z(const at::Tensor& z, const char* name) {
  TORCH_CHECK(z.device().is_cpu() && z.scalar_type() == at::kFloat && z.dim() == 3, name,
              " must be a (V, N, D) float32 CPU tensor, got ", z.scalar_type(), " ", z.sizes(), " on ", z.device());
  TORCH_CHECK(z.size(1) >= 1, name, " needs at least one row, got N = ", z.size(1));
}

// Per task: view v, columns [d0, d0 + w).
template <class Fn>
void for_each_block(int64_t V, int64_t D, Fn&& fn) {
  const int64_t width = block_width(V, D), blocks = (D + width - 1) / width;
  at::parallel_for(0, V * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t v = task / blocks, d0 = (task % blocks) * width;
      fn(v, d0, std::min(width, D - d0));
    }
  });
}

void check_columns(const at::Tensor& t, const char* name, int64_t V, int64_t D) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.numel() == V * D &&
                  (t.dim() == 2 || (t.dim() == 3 && t.size(1) == 1)) && t.size(0) == V && t.size(-1) == D,
              name, " must be a float32 CPU tensor (V, D) or (V, 1, D) = (", V, ", ", D, "), got ", t.scalar_type(),
              " ", t.sizes(), " on ", t.device());
}

// z (V, N, D), mu (V, [1,] D) its mean over N -> (centered = z - mu, norm (V, D) = ||centered|| over N): the
// reference's subtraction and torch's norm, bit for bit, in one read of z. Torch reduces a (V, N, 1) norm in
// another order (its rows are then contiguous): callers pass D = 1 to torch.
std::tuple<at::Tensor, at::Tensor> center_norm_cpu(const at::Tensor& z_in, const at::Tensor& mu_in) {
  check_z(z_in, "z");
  const auto z = z_in.contiguous();
  const int64_t V = z.size(0), N = z.size(1), D = z.size(2);
  check_columns(mu_in, "mu", V, D);
  const auto mu_c = mu_in.contiguous();
  auto centered = at::empty_like(z);
  auto norm = at::empty({V, D}, z.options());
  const float* x = z.data_ptr<float>();
  const float* mu = mu_c.data_ptr<float>();
  float* c = centered.data_ptr<float>();
  float* nrm = norm.data_ptr<float>();
  for_each_block(V, D, [&](int64_t v, int64_t d0, int64_t w) {
    std::array<float, kColumns> sum_sq{};
    const float* m = mu + v * D + d0;
    const float* xv = x + v * N * D + d0;
    float* cv = c + v * N * D + d0;
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const float centred = xv[i * D + j] - m[j];
        cv[i * D + j] = centred;
        sum_sq[j] += centred * centred;  // two roundings, as torch's kernel (no fused multiply-add)
      }
    for (int64_t j = 0; j < w; ++j) nrm[v * D + d0 + j] = std::sqrt(sum_sq[j]);
  });
  return {centered, norm};
}

// centered (V, N, D) = z - mu, mu (V, [1,] D) the mean over N, norm (V, D) = ||centered|| over N ->
// (normalised = centered / sigma, terms () = scale_weight * mean (sigma - 1)^2 + center_weight * mean
// mu^2, sigma (V, D) = norm / sqrt(N) + eps).
std::tuple<at::Tensor, at::Tensor, at::Tensor> visreg_terms_cpu(const at::Tensor& centered_in, const at::Tensor& mu_in,
                                                                const at::Tensor& norm_in, double eps,
                                                                double scale_weight, double center_weight) {
  check_z(centered_in, "centered");
  const auto c = centered_in.contiguous();
  const int64_t V = c.size(0), N = c.size(1), D = c.size(2);
  check_columns(mu_in, "mu", V, D);
  check_columns(norm_in, "norm", V, D);
  const auto mu_c = mu_in.contiguous();
  const auto norm_c = norm_in.contiguous();
  auto normalised = at::empty_like(c);
  auto sigma = at::empty({V, D}, c.options());
  // torch divides a float32 tensor by a Python scalar as float32 / float32(scalar), then adds float32(eps)
  const float root_n = static_cast<float>(std::sqrt(static_cast<double>(N)));
  const float eps_f = static_cast<float>(eps);
  const float* x = c.data_ptr<float>();
  const float* mu = mu_c.data_ptr<float>();
  const float* nrm = norm_c.data_ptr<float>();
  float* out = normalised.data_ptr<float>();
  float* sg = sigma.data_ptr<float>();
  for_each_block(V, D, [&](int64_t v, int64_t d0, int64_t w) {
    std::array<float, kColumns> s{};
    for (int64_t j = 0; j < w; ++j) s[j] = sg[v * D + d0 + j] = nrm[v * D + d0 + j] / root_n + eps_f;
    const float* xv = x + v * N * D + d0;
    float* ov = out + v * N * D + d0;
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < w; ++j) ov[i * D + j] = xv[i * D + j] / s[j];
  });
  double scale = 0.0, center = 0.0;
  for (int64_t k = 0; k < V * D; ++k) {
    const double s1 = static_cast<double>(sg[k]) - 1.0, m = mu[k];
    scale += s1 * s1;
    center += m * m;
  }
  const double count = static_cast<double>(std::max<int64_t>(V * D, 1));
  auto terms = at::empty({}, c.options());
  terms.fill_(static_cast<float>((scale_weight * scale + center_weight * center) / count));
  return {normalised, terms, sigma};
}

// grad_normalised (V, N, D) (d loss / d normalised, before shape_factor), centered, mu, sigma, norm as
// above, grad_out () -> grad_z (V, N, D): with G = shape_factor * grad_normalised, per column
//   H = G / sigma + k centered,  k = grad_out * scale_weight * 2 (sigma - 1) / (V D sqrt(N) norm)
//   (0 where norm = 0, as the reference's norm backward), and
//   grad_z = H - mean_N H + grad_out * center_weight * 2 mu / (V D N).
at::Tensor visreg_terms_backward_cpu(const at::Tensor& grad_normalised, const at::Tensor& centered_in,
                                     const at::Tensor& mu_in, const at::Tensor& sigma_in, const at::Tensor& norm_in,
                                     const at::Tensor& grad_out, double shape_factor, double scale_weight,
                                     double center_weight) {
  check_z(centered_in, "centered");
  check_z(grad_normalised, "grad_normalised");
  const int64_t V = centered_in.size(0), N = centered_in.size(1), D = centered_in.size(2);
  TORCH_CHECK(grad_normalised.sizes() == centered_in.sizes(), "grad_normalised must be ", centered_in.sizes(),
              " as centered, got ", grad_normalised.sizes());
  check_columns(mu_in, "mu", V, D);
  check_columns(sigma_in, "sigma", V, D);
  check_columns(norm_in, "norm", V, D);
  TORCH_CHECK(grad_out.scalar_type() == at::kFloat && grad_out.numel() == 1 && grad_out.device().is_cpu(),
              "grad_out must be a one-element float32 CPU tensor, got ", grad_out.scalar_type(), " ",
              grad_out.sizes(), " on ", grad_out.device());
  const auto c = centered_in.contiguous();
  const auto g_in = grad_normalised.contiguous();
  const auto mu_c = mu_in.contiguous(), sigma_c = sigma_in.contiguous(), norm_c = norm_in.contiguous();
  const auto go_in = grad_out.contiguous();
  auto grad = at::empty_like(c);
  const double go = go_in.data_ptr<float>()[0];
  const double n = static_cast<double>(N), m = static_cast<double>(V * D);
  const float* x = c.data_ptr<float>();
  const float* g = g_in.data_ptr<float>();
  const float* mu = mu_c.data_ptr<float>();
  const float* sg = sigma_c.data_ptr<float>();
  const float* nrm = norm_c.data_ptr<float>();
  float* out = grad.data_ptr<float>();
  const float factor = static_cast<float>(shape_factor);
  for_each_block(V, D, [&](int64_t v, int64_t d0, int64_t w) {
    const int64_t base = v * N * D + d0;
    std::array<float, kColumns> inv{}, k{}, shift{};
    for (int64_t j = 0; j < w; ++j) {
      const double sigma = sg[v * D + d0 + j], norm = nrm[v * D + d0 + j];
      inv[j] = static_cast<float>(1.0 / sigma);
      k[j] = norm == 0.0 ? 0.0f
                         : static_cast<float>(go * scale_weight * 2.0 * (sigma - 1.0) / (m * std::sqrt(n) * norm));
    }
    Block sum{};
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t e = base + i * D + j;
        sum[j] += factor * g[e] * inv[j] + k[j] * x[e];
      }
    for (int64_t j = 0; j < w; ++j)
      shift[j] = static_cast<float>(-sum[j] / n + go * center_weight * 2.0 * mu[v * D + d0 + j] / (m * n));
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t e = base + i * D + j;
        out[e] = factor * g[e] * inv[j] + k[j] * x[e] + shift[j];
      }
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CPU, m) {
  m.impl("center_norm", &center_norm_cpu);
  m.impl("visreg_terms", &visreg_terms_cpu);
  m.impl("visreg_terms_backward", &visreg_terms_backward_cpu);
}

}  // namespace fused_sigreg
