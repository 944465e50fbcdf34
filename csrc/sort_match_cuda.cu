// CUDA implementations. Slices of up to 4096 elements: one CTA per slice sorts (ordered key image,
// int32 row) pairs with cub::BlockRadixSort in shared memory and runs the match epilogue from
// sort_match.h in the same kernel. Longer slices: cub::DeviceSegmentedSort, then one CTA per slice
// for the epilogue. Sums are block reductions in a fixed order: deterministic, no atomics.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/device/device_segmented_sort.cuh>

#include <climits>

#include "sort_match.h"

namespace fused_sigreg {
namespace {

constexpr uint32_t kPaddingKey = 0xffffffffu;  // above every ordered key image, canonical NaN included
constexpr int kEpilogueThreads = 256;
constexpr int64_t kMaxBlockSortN = 4096;

template <int THREADS, int ITEMS>
__device__ void load_keys(const float* values, int64_t n, uint32_t (&keys)[ITEMS], int32_t (&rows)[ITEMS]) {
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int64_t i = static_cast<int64_t>(threadIdx.x) * ITEMS + j;  // blocked arrangement
    keys[j] = i < n ? ordered_bits(canonical_key(values[i])) : kPaddingKey;
    rows[j] = static_cast<int32_t>(i);
  }
}

template <int THREADS, int ITEMS>
__global__ void __launch_bounds__(THREADS) block_sort_match_kernel(const float* __restrict__ proj,
                                                                   const float* __restrict__ target,
                                                                   bool per_slice, int64_t n,
                                                                   float* __restrict__ sum_sq,
                                                                   float* __restrict__ grad) {
  using Sort = cub::BlockRadixSort<uint32_t, THREADS, ITEMS, int32_t>;
  using Reduce = cub::BlockReduce<float, THREADS>;
  __shared__ union {
    typename Sort::TempStorage sort;
    typename Reduce::TempStorage reduce;
  } tmp;

  const int64_t s = blockIdx.x;
  uint32_t keys[ITEMS];
  int32_t rows[ITEMS];
  float targets[ITEMS];
  if (per_slice) {  // sort the slice's target first; only its values are kept
    load_keys<THREADS, ITEMS>(target + element_offset(s, 0, n), n, keys, rows);
    Sort(tmp.sort).Sort(keys, rows);
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) targets[j] = from_ordered_bits(keys[j]);
    __syncthreads();
  } else {
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      const int64_t i = static_cast<int64_t>(threadIdx.x) * ITEMS + j;
      targets[j] = i < n ? target[target_offset(s, i, n, false)] : 0.0f;
    }
  }
  load_keys<THREADS, ITEMS>(proj + element_offset(s, 0, n), n, keys, rows);
  Sort(tmp.sort).Sort(keys, rows);

  float local = 0.0f;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int64_t rank = static_cast<int64_t>(threadIdx.x) * ITEMS + j;
    if (rank < n) {
      const MatchTerm term = match_term(from_ordered_bits(keys[j]), targets[j]);
      local += term.square;
      grad[element_offset(s, rows[j], n)] = term.grad;
    }
  }
  __syncthreads();
  const float total = Reduce(tmp.reduce).Sum(local);
  if (threadIdx.x == 0) sum_sq[s] = total;
}

__global__ void key_image_kernel(const float* __restrict__ values, int64_t count, uint32_t* __restrict__ keys,
                                 int32_t* __restrict__ rows, int64_t n) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < count) {
    keys[e] = ordered_bits(canonical_key(values[e]));
    if (rows != nullptr) rows[e] = static_cast<int32_t>(e % n);
  }
}

__global__ void __launch_bounds__(kEpilogueThreads) match_epilogue_kernel(
    const uint32_t* __restrict__ sorted_keys, const int32_t* __restrict__ rows, const float* __restrict__ target,
    const uint32_t* __restrict__ sorted_target_keys, int64_t n, float* __restrict__ sum_sq, float* __restrict__ grad) {
  using Reduce = cub::BlockReduce<float, kEpilogueThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t s = blockIdx.x;
  float local = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kEpilogueThreads) {
    const int64_t e = element_offset(s, i, n);
    const float tv = sorted_target_keys != nullptr ? from_ordered_bits(sorted_target_keys[e])
                                                   : target[target_offset(s, i, n, false)];
    const MatchTerm term = match_term(from_ordered_bits(sorted_keys[e]), tv);
    local += term.square;
    grad[element_offset(s, rows[e], n)] = term.grad;
  }
  const float total = Reduce(tmp).Sum(local);
  if (threadIdx.x == 0) sum_sq[s] = total;
}

void check_proj(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2, name, " must be (S, N), got ", t.sizes());
  TORCH_CHECK(t.numel() < INT_MAX, name, ": CUB's segmented sort takes fewer than 2^31 elements, got ", t.numel());
}

// Sorted key images and source rows of every row of values (S, N), with cub::DeviceSegmentedSort.
std::tuple<at::Tensor, at::Tensor> segmented_sort_images(const at::Tensor& values, bool with_rows) {
  const int64_t S = values.size(0), N = values.size(1), count = values.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto opts = values.options();
  auto keys = at::empty({S, N}, opts.dtype(at::kInt));
  auto keys_out = at::empty({S, N}, opts.dtype(at::kInt));
  at::Tensor rows, rows_out;
  if (with_rows) {
    rows = at::empty({S, N}, opts.dtype(at::kInt));
    rows_out = at::empty({S, N}, opts.dtype(at::kInt));
  }
  const int threads = 256;
  const int blocks = static_cast<int>((count + threads - 1) / threads);
  key_image_kernel<<<blocks, threads, 0, stream>>>(
      values.data_ptr<float>(), count, reinterpret_cast<uint32_t*>(keys.data_ptr<int32_t>()),
      with_rows ? rows.data_ptr<int32_t>() : nullptr, N);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto offsets = at::arange(0, (S + 1) * N, N, opts.dtype(at::kLong));
  const int64_t* begin = offsets.data_ptr<int64_t>();
  const int64_t* end = begin + 1;
  auto* k_in = reinterpret_cast<uint32_t*>(keys.data_ptr<int32_t>());
  auto* k_out = reinterpret_cast<uint32_t*>(keys_out.data_ptr<int32_t>());
  size_t temp_bytes = 0;
  if (with_rows) {
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairs(nullptr, temp_bytes, k_in, k_out, rows.data_ptr<int32_t>(),
                                                             rows_out.data_ptr<int32_t>(), static_cast<int>(count),
                                                             static_cast<int>(S), begin, end, stream));
  } else {
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortKeys(nullptr, temp_bytes, k_in, k_out, static_cast<int>(count),
                                                            static_cast<int>(S), begin, end, stream));
  }
  auto temp = at::empty({static_cast<int64_t>(temp_bytes)}, opts.dtype(at::kByte));
  if (with_rows) {
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairs(temp.data_ptr(), temp_bytes, k_in, k_out,
                                                             rows.data_ptr<int32_t>(), rows_out.data_ptr<int32_t>(),
                                                             static_cast<int>(count), static_cast<int>(S), begin, end,
                                                             stream));
  } else {
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortKeys(temp.data_ptr(), temp_bytes, k_in, k_out,
                                                            static_cast<int>(count), static_cast<int>(S), begin, end,
                                                            stream));
  }
  return {keys_out, rows_out};
}

template <int THREADS, int ITEMS>
void launch_block(const at::Tensor& p, const at::Tensor& t, bool per_slice, at::Tensor& sum_sq, at::Tensor& grad) {
  block_sort_match_kernel<THREADS, ITEMS><<<static_cast<unsigned>(p.size(0)), THREADS, 0,
                                            c10::cuda::getCurrentCUDAStream()>>>(
      p.data_ptr<float>(), t.data_ptr<float>(), per_slice, p.size(1), sum_sq.data_ptr<float>(),
      grad.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> sort_match_cuda(const at::Tensor& proj, const at::Tensor& target) {
  check_proj(proj, "proj");
  const int64_t S = proj.size(0), N = proj.size(1);
  TORCH_CHECK(target.device() == proj.device() && target.scalar_type() == at::kFloat,
              "target must be float32 on ", proj.device(), ", got ", target.scalar_type(), " on ", target.device());
  const bool per_slice = target.dim() == 2;
  TORCH_CHECK((target.dim() == 1 && target.size(0) == N) || (per_slice && target.size(0) == S && target.size(1) == N),
              "target must be (N,) = (", N, ",) or (S, N) = (", S, ", ", N, "), got ", target.sizes());
  c10::cuda::CUDAGuard guard(proj.device());
  const auto p = proj.contiguous();
  const auto t = target.contiguous();
  auto sum_sq = at::empty({S}, p.options());
  auto grad = at::empty({S, N}, p.options());
  if (S == 0) return {sum_sq, grad};
  // (threads, items per thread) from ptxas reports: <256, 8> spills on sm_90, <128, 16> does not.
  if (N <= 512) {
    launch_block<128, 4>(p, t, per_slice, sum_sq, grad);
  } else if (N <= 2048) {
    launch_block<128, 16>(p, t, per_slice, sum_sq, grad);
  } else if (N <= kMaxBlockSortN) {
    launch_block<256, 16>(p, t, per_slice, sum_sq, grad);
  } else {
    auto [keys, rows] = segmented_sort_images(p, true);
    at::Tensor target_keys;
    if (per_slice) target_keys = std::get<0>(segmented_sort_images(t, false));
    match_epilogue_kernel<<<static_cast<unsigned>(S), kEpilogueThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const uint32_t*>(keys.data_ptr<int32_t>()), rows.data_ptr<int32_t>(), t.data_ptr<float>(),
        per_slice ? reinterpret_cast<const uint32_t*>(target_keys.data_ptr<int32_t>()) : nullptr, N,
        sum_sq.data_ptr<float>(), grad.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {sum_sq, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_sigreg, CUDA, m) {
  m.impl("sort_match", &sort_match_cuda);
}

}  // namespace fused_sigreg
