// The CPU per-slice sort shared by every sort-based CPU op (sort_match, sort_stat): keys are the
// ordered images of canonical float keys (sort_match.h), so both ops order values, ties and NaN alike.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "sort_match.h"

namespace fused_sigreg {

struct SliceSorter {
  std::vector<uint32_t> keys, keys_tmp;
  std::vector<int32_t> rows, rows_tmp;

  // Sorts values[0..n) by ordered_bits(canonical_key(.)); afterwards keys[i] is the image of the
  // i-th smallest value and rows[i] its original position (stable: ties keep row order). 8-bit digits,
  // passes whose digit is the same for every key are skipped.
  void sort(const float* values, int64_t n) {
    keys.resize(n), keys_tmp.resize(n), rows.resize(n), rows_tmp.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      keys[i] = ordered_bits(canonical_key(values[i]));
      rows[i] = static_cast<int32_t>(i);
    }
    if (n <= kInsertionSortMax) {
      insertion_sort(n);
      return;
    }
    for (int shift = 0; shift < 32; shift += 8) {
      std::array<int64_t, 257> start{};
      for (int64_t i = 0; i < n; ++i) ++start[((keys[i] >> shift) & 0xff) + 1];
      if (*std::max_element(start.begin(), start.end()) == n) continue;
      for (int d = 0; d < 256; ++d) start[d + 1] += start[d];
      for (int64_t i = 0; i < n; ++i) {
        const int64_t dst = start[(keys[i] >> shift) & 0xff]++;
        keys_tmp[dst] = keys[i];
        rows_tmp[dst] = rows[i];
      }
      keys.swap(keys_tmp);
      rows.swap(rows_tmp);
    }
  }

  // Below this many rows a radix pass costs more in its 257-entry histogram (cleared, scanned and
  // summed, up to 4 times per slice) than the whole sort: at N = 16 that overhead was most of a
  // slice's time, and the cpu backend fell behind torch.sort. Insertion sort moves a key only past
  // strictly greater ones, so it is stable like the radix sort.
  static constexpr int64_t kInsertionSortMax = 64;

  void insertion_sort(int64_t n) {
    for (int64_t i = 1; i < n; ++i) {
      const uint32_t key = keys[i];
      const int32_t row = rows[i];
      int64_t j = i;
      for (; j > 0 && keys[j - 1] > key; --j) {
        keys[j] = keys[j - 1];
        rows[j] = rows[j - 1];
      }
      keys[j] = key;
      rows[j] = row;
    }
  }
};

void check_proj(const at::Tensor& t, const char* name);

}  // namespace fused_sigreg
