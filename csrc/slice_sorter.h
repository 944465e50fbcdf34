// The CPU per-slice sort shared by every sort-based CPU op (sort_match, sort_stat): keys are the
// ordered images of canonical float keys (sort_match.h), so both ops order values, ties and NaN alike.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "sort_match.h"

namespace fused_sigreg {

struct SliceSorter {
  std::vector<uint32_t> keys;
  std::vector<int32_t> rows;
  std::vector<uint64_t> packed, packed_tmp;  // the radix sort's (image << 32 | row) items

  // Sorts values[0..n) by ordered_bits(canonical_key(.)); afterwards keys[i] is the image of the
  // i-th smallest value and rows[i] its original position (stable: ties keep row order).
  void sort(const float* values, int64_t n) {
    keys.resize(n), rows.resize(n);
    if (n <= kRankSortMax) {
      rank_sort(values, n);
    } else {
      radix_sort(values, n);
    }
  }

  // Up to this many rows each key's rank is counted against every other key: n^2 compares with no
  // branches, which the compiler vectorises, cost less than a radix sort's four 256-bucket histograms
  // or an insertion sort's mispredicted branches (docs/results.md, "Sort ops at small batches").
  static constexpr int64_t kRankSortMax = 64;

  // Stable: key i goes after every smaller key and every equal key of a smaller row.
  void rank_sort(const float* values, int64_t n) {
    int32_t signed_keys[kRankSortMax];  // ordered images with the top bit flipped: a signed compare orders them
    for (int64_t i = 0; i < n; ++i) {
      signed_keys[i] = static_cast<int32_t>(ordered_bits(canonical_key(values[i])) ^ 0x80000000u);
    }
    for (int64_t i = 0; i < n; ++i) {
      const int32_t key = signed_keys[i];
      int32_t rank = 0;
      for (int64_t j = 0; j < i; ++j) rank += signed_keys[j] <= key;
      for (int64_t j = i + 1; j < n; ++j) rank += signed_keys[j] < key;
      keys[rank] = static_cast<uint32_t>(key) ^ 0x80000000u;
      rows[rank] = static_cast<int32_t>(i);
    }
  }

  // LSD radix sort, 8-bit digits, of (image << 32 | row): one 8-byte move per key and pass, all four
  // histograms from one read of the keys, and passes whose digit is the same for every key skipped.
  void radix_sort(const float* values, int64_t n) {
    packed.resize(n), packed_tmp.resize(n);
    std::array<std::array<uint32_t, 256>, 4> count{};
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t key = ordered_bits(canonical_key(values[i]));
      packed[i] = (static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(i);
      ++count[0][key & 0xff], ++count[1][(key >> 8) & 0xff], ++count[2][(key >> 16) & 0xff], ++count[3][key >> 24];
    }
    for (int digit = 0; digit < 4; ++digit) {
      bool constant = false;
      uint32_t start = 0;
      for (auto& c : count[digit]) {
        constant |= c == static_cast<uint32_t>(n);
        const uint32_t here = c;
        c = start;
        start += here;
      }
      if (constant) continue;
      const int shift = 32 + 8 * digit;
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t item = packed[i];
        packed_tmp[count[digit][(item >> shift) & 0xff]++] = item;
      }
      packed.swap(packed_tmp);
    }
    for (int64_t i = 0; i < n; ++i) {
      keys[i] = static_cast<uint32_t>(packed[i] >> 32);
      rows[i] = static_cast<int32_t>(packed[i] & 0xffffffffu);
    }
  }
};

void check_proj(const at::Tensor& t, const char* name);

// Every slice (row) of p, (S, N) float32 contiguous, sorted (at::parallel_for over slices): the sorted
// canonical values (S, N) float32 and their original rows (S, N) int32. For ops whose per-rank step runs
// after a pass over the whole sorted block (the statistics' vectorised transcendental functions).
inline std::pair<at::Tensor, at::Tensor> sort_slices(const at::Tensor& p) {
  const int64_t S = p.size(0), N = p.size(1);
  auto sorted = at::empty({S, N}, p.options());
  auto rows = at::empty({S, N}, p.options().dtype(at::kInt));
  const float* p_in = p.data_ptr<float>();
  float* sorted_out = sorted.data_ptr<float>();
  int32_t* rows_out = rows.data_ptr<int32_t>();
  at::parallel_for(0, S, 1, [&](int64_t begin, int64_t end) {
    SliceSorter sorter;
    for (int64_t s = begin; s < end; ++s) {
      sorter.sort(p_in + element_offset(s, 0, N), N);
      for (int64_t i = 0; i < N; ++i) {
        sorted_out[element_offset(s, i, N)] = from_ordered_bits(sorter.keys[i]);
        rows_out[element_offset(s, i, N)] = sorter.rows[i];
      }
    }
  });
  return {sorted, rows};
}

}  // namespace fused_sigreg
