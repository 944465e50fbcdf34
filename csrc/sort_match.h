// Index math and the quantile-matching epilogue shared by the CPU and CUDA implementations, so
// the CPU build (and its tests) exercises the code the GPU runs.
//
// Layout: projections are (S, N) row-major, one slice per row; element i of slice s is s * N + i.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

namespace fused_sigreg {

FS_HD uint32_t float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
#endif
}

FS_HD float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
#endif
}

// The value sorted in place of v: -0 becomes +0 (torch.sort treats them as equal, a radix sort
// would not) and every NaN becomes the canonical +NaN, which sorts after +inf as in torch.sort.
FS_HD float canonical_key(float v) {
  return v != v ? bits_float(0x7fc00000u) : v + 0.0f;
}

// Order-preserving unsigned image of a canonical key: a < b as floats iff image(a) < image(b).
FS_HD uint32_t ordered_bits(float key) {
  const uint32_t b = float_bits(key);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Inverse of ordered_bits.
FS_HD float from_ordered_bits(uint32_t image) {
  return bits_float((image & 0x80000000u) ? (image & 0x7fffffffu) : ~image);
}

FS_HD int64_t element_offset(int64_t slice, int64_t i, int64_t n) { return slice * n + i; }

// The target matched to rank i: a shared quantile vector (N,) or the slice's own sorted target.
FS_HD int64_t target_offset(int64_t slice, int64_t i, int64_t n, bool per_slice_target) {
  return per_slice_target ? element_offset(slice, i, n) : i;
}

// Epilogue for rank i of a slice: the residual r = sorted_i - target_i contributes r^2 to the
// slice's sum of squares and d(sum r^2)/d(value at its original row) = 2 r.
struct MatchTerm {
  float square;
  float grad;
};

FS_HD MatchTerm match_term(float sorted_value, float target_value) {
  const float r = sorted_value - target_value;
  return MatchTerm{r * r, 2.0f * r};
}

}  // namespace fused_sigreg
