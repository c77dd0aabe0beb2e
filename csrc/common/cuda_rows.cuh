// The CUDA row toolkit shared by every kernel (device code: include from .cu files only).
//
// Launch shape: a block of kRowBlock threads per row for long rows, a warp per row (kRowBlock / 32
// rows per block) for rows shorter than 1024 entries; TPR = threads per row is a template
// argument of every helper, so that one kernel body serves both shapes. Row index and thread
// index in the row, sum / barrier over a row's threads, and the vectorised visit / map of a row
// (scalar head up to 16-byte alignment, 16-byte packs, scalar tail).
#pragma once

#include <cstdint>
#include <type_traits>

namespace sedd {

constexpr int kRowBlock = 256;

// Calls launch(std::integral_constant<int, threads per row>, number of blocks).
template <typename Launch>
void launch_rows(int64_t rows, int64_t V, Launch&& launch) {
  if (V >= 1024) {
    launch(std::integral_constant<int, kRowBlock>{}, rows);
  } else {
    launch(std::integral_constant<int, 32>{}, (rows + kRowBlock / 32 - 1) / (kRowBlock / 32));
  }
}

// The row this thread works on, and its index among the TPR threads of that row. A kernel
// returns early only for whole rows (r >= rows), so the row barriers below never mismatch.
template <int TPR>
__device__ __forceinline__ int64_t row_index() {
  return static_cast<int64_t>(blockIdx.x) * (kRowBlock / TPR) + threadIdx.x / TPR;
}
template <int TPR>
__device__ __forceinline__ int row_thread() {
  return static_cast<int>(threadIdx.x % TPR);
}

// Sum over the TPR threads of a row (TPR = 32: one warp; TPR = kRowBlock: the whole block), in
// the accumulation type A, then fp64 across warps. smem: kRowBlock / 32 doubles.
template <int TPR, typename A>
__device__ __forceinline__ double row_sum(A v, double* smem) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if constexpr (TPR == 32) {
    return static_cast<double>(v);
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // smem may still be read by a previous row_sum
    if (lane == 0) smem[warp] = static_cast<double>(v);
    __syncthreads();
    double s = 0.0;
#pragma unroll
    for (int w = 0; w < TPR / 32; ++w) s += smem[w];
    return s;
  }
}

// Maximum over the TPR threads of a row (fp64; smem: kRowBlock / 32 doubles).
template <int TPR>
__device__ __forceinline__ double row_max(double v, double* smem) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, off));
  if constexpr (TPR == 32) {
    return v;
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // smem may still be read by a previous row reduction
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    double m = smem[0];
#pragma unroll
    for (int w = 1; w < TPR / 32; ++w) m = fmax(m, smem[w]);
    return m;
  }
}

// Whether any of the TPR threads of a row has v set.
template <int TPR>
__device__ __forceinline__ bool row_any(bool v) {
  if constexpr (TPR == 32) {
    return __any_sync(0xffffffffu, v);
  } else {
    return __syncthreads_or(v) != 0;
  }
}

// A barrier among the TPR threads of a row.
template <int TPR>
__device__ __forceinline__ void row_barrier() {
  if constexpr (TPR == 32) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

// 16 bytes of T: the unit of the vectorised loops.
template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

// In-row indices are int32 (V < 2^31 is checked on the host); row offsets are int64.
template <typename T>
__device__ __forceinline__ int head_elems(const T* p, int V) {
  const int h = static_cast<int>(((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / sizeof(T));
  return h < V ? h : V;
}

// Is one of the (at most two) special in-row indices inside the pack starting at `base`?
template <int N>
__device__ __forceinline__ bool pack_has(int base, int s0, int s1) {
  return static_cast<unsigned>(s0 - base) < N || static_cast<unsigned>(s1 - base) < N;
}

// Visits every y in [0, V) of the row `p`, the nt threads of the row splitting it: a scalar head
// up to 16-byte alignment, a 16-byte vector body, a scalar tail. Entries of the head, the tail
// and the (at most two) packs that hold a special index s0/s1 go to slow(y, v); every other entry
// goes to fast(v), which needs no index arithmetic.
template <typename T, typename Fast, typename Slow>
__device__ __forceinline__ void row_for_each(const T* __restrict__ p, int V, int t, int nt, int s0,
                                             int s1, Fast&& fast, Slow&& slow) {
  constexpr int N = Pack<T>::N;
  const int head = head_elems(p, V);
  for (int j = t; j < head; j += nt) slow(j, p[j]);
  const int nvec = (V - head) / N;
  const Pack<T>* vp = reinterpret_cast<const Pack<T>*>(p + head);
#pragma unroll 4
  for (int k = t; k < nvec; k += nt) {
    const Pack<T> pk = vp[k];
    const int base = head + k * N;
    if (pack_has<N>(base, s0, s1)) {
#pragma unroll
      for (int q = 0; q < N; ++q) slow(base + q, pk.v[q]);
    } else {
#pragma unroll
      for (int q = 0; q < N; ++q) fast(pk.v[q]);
    }
  }
  for (int j = head + nvec * N + t; j < V; j += nt) slow(j, p[j]);
}

// o[y] = fast(p[y]) or slow(y, p[y]) (same split as row_for_each); vector stores when input and
// output rows share their alignment, scalar stores otherwise. o may be p itself (in place: each
// entry is read, then written, by the same thread).
template <typename T, typename Fast, typename Slow>
__device__ __forceinline__ void row_map(const T* p, T* o, int V, int t, int nt, int s0, int s1,
                                        Fast&& fast, Slow&& slow) {
  constexpr int N = Pack<T>::N;
  if (((reinterpret_cast<uintptr_t>(p) ^ reinterpret_cast<uintptr_t>(o)) & 15) != 0) {
    for (int j = t; j < V; j += nt) o[j] = static_cast<T>(slow(j, p[j]));
    return;
  }
  const int head = head_elems(p, V);
  for (int j = t; j < head; j += nt) o[j] = static_cast<T>(slow(j, p[j]));
  const int nvec = (V - head) / N;
  const Pack<T>* vp = reinterpret_cast<const Pack<T>*>(p + head);
  Pack<T>* vo = reinterpret_cast<Pack<T>*>(o + head);
#pragma unroll 4
  for (int k = t; k < nvec; k += nt) {
    const Pack<T> pk = vp[k];
    const int base = head + k * N;
    Pack<T> out;
    if (pack_has<N>(base, s0, s1)) {
#pragma unroll
      for (int q = 0; q < N; ++q) out.v[q] = static_cast<T>(slow(base + q, pk.v[q]));
    } else {
#pragma unroll
      for (int q = 0; q < N; ++q) out.v[q] = static_cast<T>(fast(pk.v[q]));
    }
    vo[k] = out;
  }
  for (int j = head + nvec * N + t; j < V; j += nt) o[j] = static_cast<T>(slow(j, p[j]));
}

}  // namespace sedd
