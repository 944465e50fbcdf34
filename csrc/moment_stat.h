// lejepa's moment-family normality statistics of one column from its power sums, and the gradient as a
// polynomial in the column's values: the per-column half of the fused ``moment_stat`` op (the passes
// over the rows are the caller's). Definitions: fused_sigreg/univariate.py (moments, vcreg,
// extended_jarque_bera), the eager references these are tested against. fused_sigreg/kernels/moment_stat.py
// is the Triton twin of this file.
//
// The caller shifts every value by a per-column constant c (the column's first value for the central
// statistics, 0 for Moments' raw moments) and sums d^p, d = x - c, in double. The statistic is a
// function of those sums for any fixed c, so its gradient is sum_p dF/dT_p p d^(p-1): a polynomial in d
// whose coefficients are written to ``coef`` (coef[q] multiplies d^q). Shifting by a sample puts the
// deviations on the spread's scale, so the central moments stay well conditioned when the spread is
// tiny against the mean (near-collapse) in one pass over the rows.
#pragma once

#include <cmath>
#include <cstdint>

namespace fused_sigreg {

// The statistic ids of the op's schema (csrc/ops.cpp); fused_sigreg/backends/moment_stat.py names them.
enum class MomentStatistic : int64_t {
  kMoments = 0,
  kVCReg = 1,
  kExtendedJarqueBera = 2,
};

namespace moment_stat {

constexpr int64_t kMaxOrder = 16;  // the highest power sum the op takes (Moments' k_max)
constexpr double kSdFloor = 9.99999993922529029e-09;  // float(1e-8): the reference's clamp of the sd

// The highest power summed for a statistic.
inline int64_t order(MomentStatistic stat, int64_t k_max) {
  switch (stat) {
    case MomentStatistic::kMoments:
      return k_max;
    case MomentStatistic::kVCReg:
      return 2;
    default:
      return 4;
  }
}

// The gradient polynomial's coefficient count: k_max for Moments, 4 (up to d^3) otherwise.
inline int64_t degree(MomentStatistic stat, int64_t k_max) { return stat == MomentStatistic::kMoments ? k_max : 4; }

// Whether the statistic's moments are central (the values are shifted by a sample of their column);
// Moments' raw moments take the values as they are.
inline bool centred(MomentStatistic stat) { return stat != MomentStatistic::kMoments; }

// sign(v) with sign(0) = 0: the gradient torch's abs passes.
inline double sgn(double v) { return static_cast<double>((v > 0.0) - (v < 0.0)); }

// E Z^k of N(0, 1): (k - 1)!! for even k, 0 for odd k.
inline double gaussian_moment(int64_t k) {
  if (k % 2) return 0.0;
  double m = 1.0;
  for (int64_t j = k - 1; j > 1; j -= 2) m *= static_cast<double>(j);
  return m;
}

// Moments: |m_1| + sum_{k=2..k_max} e^-k |m_k - E Z^k|, m_k = T_k / n (c = 0). T[p] = sum d^p, p = 1..k_max.
inline double moments(const double* T, double n, int64_t k_max, double* coef) {
  const double m1 = T[1] / n;
  double value = std::fabs(m1);
  coef[0] = sgn(m1) / n;
  for (int64_t k = 2; k <= k_max; ++k) {
    const double w = std::exp(-static_cast<double>(k));
    const double gap = T[k] / n - gaussian_moment(k);
    value += w * std::fabs(gap);
    coef[k - 1] = w * sgn(gap) * static_cast<double>(k) / n;
  }
  return value;
}

// VCReg (stat = kVCReg) or Extended Jarque-Bera from the shifted sums T[1..4] of one column of n values.
// Gradients: with mu the mean and M_p the central moments, d mu / dx_i = 1/n and
// d M_p / dx_i = p/n (e_i^(p-1) - M_(p-1)), e_i = x_i - mu; so grad_i = b0 + b1 e + b2 e^2 + b3 e^3,
// rewritten below as a polynomial in d_i = e_i + delta (delta = T_1 / n = mean - c).
inline double central(MomentStatistic stat, const double* T, double n, double c, bool closed, double* coef) {
  const double delta = T[1] / n, d2 = delta * delta;
  const double mu = c + delta;
  const double m2 = T[2] / n - d2;
  const double v = m2 * n / (n - 1.0);  // unbiased variance (NaN at n = 1, as torch's var)
  // vcreg = n mu^2 / v + (n - 1)(v - 1)^2 / 2
  double value = mu * mu * n / v + (v - 1.0) * (v - 1.0) * ((n - 1.0) / 2.0);
  const double g_mu = 2.0 * mu * n / v;
  double g_v = -mu * mu * n / (v * v) + (v - 1.0) * (n - 1.0);
  double g3 = 0.0, g4 = 0.0, m3 = 0.0;
  if (stat == MomentStatistic::kExtendedJarqueBera) {
    m3 = T[3] / n - 3.0 * delta * T[2] / n + 2.0 * d2 * delta;
    const double m4 = T[4] / n - 4.0 * delta * T[3] / n + 6.0 * d2 * T[2] / n - 3.0 * d2 * d2;
    const double s = std::sqrt(v);
    const bool passes = s > kSdFloor || (closed && s == kSdFloor);
    const double sc = s > kSdFloor ? s : kSdFloor;
    const double s3 = sc * sc * sc, s4 = s3 * sc;
    const double skew = m3 / s3, kurt = m4 / s4;
    value += n / 6.0 * (skew * skew + 0.25 * (kurt - 3.0) * (kurt - 3.0));
    g3 = n * skew / (3.0 * s3);
    g4 = n * (kurt - 3.0) / (12.0 * s4);
    const double g_sc = -(n / sc) * (skew * skew + (kurt - 3.0) * kurt / 3.0);
    // sqrt's derivative; where the clamp holds it, the reference multiplies it by 0 (0 * inf = NaN at v = 0)
    g_v += g_sc * (passes ? 1.0 : 0.0) * (0.5 / s);
  }
  const double g2 = g_v * n / (n - 1.0);
  const double b0 = (g_mu - 3.0 * g3 * m2 - 4.0 * g4 * m3) / n;
  const double b1 = 2.0 * g2 / n, b2 = 3.0 * g3 / n, b3 = 4.0 * g4 / n;
  // sum_q b_q (d - delta)^q as sum_q a_q d^q
  coef[0] = b0 - b1 * delta + b2 * d2 - b3 * d2 * delta;
  coef[1] = b1 - 2.0 * b2 * delta + 3.0 * b3 * d2;
  coef[2] = b2 - 3.0 * b3 * delta;
  coef[3] = b3;
  return value;
}

}  // namespace moment_stat
}  // namespace fused_sigreg
