// lejepa's EDF-family normality statistics of one sorted slice, and their gradients with respect to
// the sorted values: the per-rank half of the fused ``sort_stat`` op (the sort and the scatter back
// to the original rows are the caller's). Definitions: fused_sigreg/univariate.py, the eager
// references these are tested against. Everything is in double: the statistics are sums of n terms
// that cancel (Anderson-Darling is -n + a sum of size n), which float32 would round away.
#pragma once

#include <cmath>
#include <cstdint>

namespace fused_sigreg {

// The statistic ids of the op's schema (csrc/ops.cpp); fused_sigreg/backends/extension/sort_stat.py
// names them.
enum class SortStatistic : int64_t {
  kCramerVonMises = 0,
  kWatson = 1,
  kAndersonDarling = 2,
  kShapiroWilk = 3,
  kEntropyCentered = 4,
  kEntropyRight = 5,
};

namespace sort_stat {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kLog2Pi = 1.83787706640934548356;
constexpr double kTailThreshold = 3.0;  // lejepa's log_norm_cdf switches to its tail forms beyond +-3

// q(y) = 0.656 y + 0.344 y^2 + 5.334: the square of the Mills-ratio denominator lejepa's tails use.
inline double tail_q(double y) { return 0.656 * y + 0.344 * y * y + 5.334; }
inline double tail_dq(double y) { return 0.656 + 0.688 * y; }

// Phi, its density and log Phi(+-x) of every sorted value, computed beforehand by the caller over the
// whole (S, N) block with ATen's vectorised erf / exp / log (evaluated one value at a time they were
// most of this op's time). Cramer-von Mises and Watson take them in float (T = float: torch.erf and
// torch.exp are within 5e-8 of the double values, and the errors average out in the double sums);
// Anderson-Darling in double (T = double), whose -n + sum cancels about log10(n) digits.
template <class T>
struct Elementwise {
  const T* cdf;       // Phi(s_i)
  const T* pdf;       // the N(0,1) density at s_i
  const T* log_cdf;   // log Phi(s_i)         (Anderson-Darling only)
  const T* log_ccdf;  // log (1 - Phi(s_i))   (Anderson-Darling only)
};

// lejepa's log Phi(x) (univariate.log_norm_cdf) and its derivative, branch by branch; ``log_cdf``,
// ``cdf`` and ``pdf`` are log Phi(x), Phi(x) and the density at x, used in the central branch.
// ``closed``: whether torch's clamp passes the gradient at its bounds (it did up to torch 2.11 and does
// not since; the reference clamps, so its gradient at a bound is torch's: fused_sigreg.univariate.CLAMP_CLOSED).
struct LogCdf {
  double value, slope;
};

inline LogCdf log_norm_cdf(double x, double log_cdf, double cdf, double pdf, bool closed) {
  if (x < -kTailThreshold) {
    const double y = -x;
    return {-(x * x + kLog2Pi) / 2.0 - 0.5 * std::log(tail_q(y)), -x + 0.5 * tail_dq(y) / tail_q(y)};
  }
  if (x > kTailThreshold) {
    const double g = pdf / std::sqrt(tail_q(x));
    const double dg = g * (-x - 0.5 * tail_dq(x) / tail_q(x));
    return {std::log1p(-g), -dg / (1.0 - g)};
  }
  // at x = +-3 exactly the reference's clamp decides: its gradient passes at the bounds or not (``closed``)
  const bool inside = closed || (x != kTailThreshold && x != -kTailThreshold);
  return {log_cdf, inside ? pdf / cdf : 0.0};
}

// mean_i (Phi(s_i) - (2i + 1) / 2n)^2 (0-based i); Watson subtracts (mean Phi - 1/2)^2.
inline double cramer_von_mises(int64_t n, bool watson, const Elementwise<float>& e, double* grad) {
  double sum_sq = 0.0, sum_cdf = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double r = e.cdf[i] - (2.0 * i + 1.0) / (2.0 * n);
    sum_sq += r * r;
    sum_cdf += e.cdf[i];
    grad[i] = 2.0 * r * e.pdf[i] / n;
  }
  double value = sum_sq / n;
  if (watson) {
    const double centre = sum_cdf / n - 0.5;
    value -= centre * centre;
    for (int64_t i = 0; i < n; ++i) grad[i] -= 2.0 * centre * e.pdf[i] / n;
  }
  return value;
}

// -n - sum_i [(2i + 1) log Phi(s_i) + (2n - 2i - 1) log Phi(-s_i)] / n: the reference's pairing of rank i
// with rank n - 1 - i, summed per value. Phi(-x) = 1 - Phi(x) costs at most 3 of double's 16 digits on
// [-3, 3], where it is used.
inline double anderson_darling(const float* s, int64_t n, const Elementwise<double>& e, bool closed, double* grad) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double low = 2.0 * i + 1.0, high = 2.0 * (n - i) - 1.0;
    const double x = s[i];
    const LogCdf a = log_norm_cdf(x, e.log_cdf[i], e.cdf[i], e.pdf[i], closed);
    const LogCdf b = log_norm_cdf(-x, e.log_ccdf[i], 1.0 - e.cdf[i], e.pdf[i], closed);
    sum += low * a.value + high * b.value;
    grad[i] = -(low * a.slope - high * b.slope) / n;
  }
  return -static_cast<double>(n) - sum / n;
}

// lejepa's NLL of the rank-j (0-based) order statistic of n N(0,1) samples at x, and its derivative in x
// (univariate.nll): -(c_j + j log Phi(x) + (n - 1 - j) log Phi(-x) - x^2 / 2 - log sqrt(2 pi)), c_j the
// log multinomial constant (the reference's float32 value, passed in). a / b: log Phi(+-x) by log_norm_cdf.
inline LogCdf order_nll(double x, int64_t j, int64_t n, double c, const LogCdf& a, const LogCdf& b) {
  const double below = static_cast<double>(j), above = static_cast<double>(n - 1 - j);
  return {-(c + a.value * below + b.value * above - x * x / 2.0 - 0.5 * kLog2Pi),
          -(a.slope * below - b.slope * above - x)};
}

// 1 - |cos(a, s)| as torch.nn.functional.cosine_similarity computes it: each norm clamped to eps
// without a gradient through the clamp (the norm's own gradient s / |s| is kept).
inline double shapiro_wilk(const float* s, const float* weights, int64_t n, double eps, double* grad) {
  double dot = 0.0, norm_s = 0.0, norm_a = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    dot += static_cast<double>(weights[i]) * s[i];
    norm_s += static_cast<double>(s[i]) * s[i];
    norm_a += static_cast<double>(weights[i]) * weights[i];
  }
  norm_s = std::sqrt(norm_s);
  norm_a = std::sqrt(norm_a);
  const double ca = std::max(norm_a, eps), cs = std::max(norm_s, eps);
  const double cos = dot / (ca * cs);
  const double sign = cos > 0.0 ? 1.0 : (cos < 0.0 ? -1.0 : (cos == 0.0 ? 0.0 : cos));  // NaN stays NaN
  const double radial = norm_s > 0.0 ? dot / (ca * cs * cs * norm_s) : 0.0;
  for (int64_t i = 0; i < n; ++i) grad[i] = -sign * (weights[i] / (ca * cs) - radial * static_cast<double>(s[i]));
  return 1.0 - std::fabs(cos);
}

inline double log_spacing(double d, double eps, bool closed, double* slope) {
  // clamp(min=eps) passes the gradient where d > eps, and at d = eps where torch's clamp does. The log in float (an
  // absolute error of ~1e-7 per spacing, averaged over n): in double it cost as much as the sort.
  *slope = (d > eps || (closed && d == eps)) ? 1.0 / d : 0.0;
  return static_cast<double>(std::log(static_cast<float>(std::max(d, eps))));
}

// Vasicek's entropy gap (univariate.entropy). Needs n >= 2m + 2 (centred) or n >= m + 2 (right); the
// caller routes smaller samples to the reference.
inline double entropy(const float* s, int64_t n, int64_t m, double eps, bool centered, bool closed,
                      double* grad) {
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) mean += s[i];
  mean /= n;
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += (s[i] - mean) * (s[i] - mean);
  const double var = ss / (n - 1);
  const double h_normal = 0.5 * std::log(2.0 * M_PI * std::exp(1.0));
  // grad holds d(sum of log spacings)/ds first
  for (int64_t i = 0; i < n; ++i) grad[i] = 0.0;
  double logs = 0.0, slope;
  const int64_t gap = centered ? 2 * m : m;
  for (int64_t i = 0; i + gap < n; ++i) {
    logs += log_spacing(static_cast<double>(s[i + gap]) - s[i], eps, closed, &slope);
    grad[i + gap] += slope;
    grad[i] -= slope;
  }
  double value;
  if (centered) {
    for (int64_t j = 0; j < 2 * m; ++j) {
      logs += log_spacing(static_cast<double>(s[1 + j]) - s[0], eps, closed, &slope);
      grad[1 + j] += slope;
      grad[0] -= slope;
      logs += log_spacing(static_cast<double>(s[n - 1]) - s[n - 2 * m - 1 + j], eps, closed, &slope);
      grad[n - 1] += slope;
      grad[n - 2 * m - 1 + j] -= slope;
    }
    value = std::exp(h_normal - logs / n - std::log(static_cast<double>(n)) + std::log(2.0 * m) + 0.5 * std::log(var));
  } else {
    value = h_normal - logs / n - std::log(static_cast<double>(n)) + std::log(m * std::sqrt(var));
  }
  // d value / d log-spacing-sum = -1/n (times value when centred); d log sd / ds_i = (s_i - mean) / ((n - 1) var)
  const double outer = centered ? value : 1.0;
  for (int64_t i = 0; i < n; ++i) grad[i] = outer * (-grad[i] / n + (s[i] - mean) / ((n - 1) * var));
  return value;
}

}  // namespace sort_stat
}  // namespace fused_sigreg
