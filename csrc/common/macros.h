// Shared macros for code compiled both by the host C++ compiler and by nvcc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SEDD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SEDD_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace sedd {

// Graph ids used by every op. The public API takes the names "absorb" and "uniform".
enum class Graph : int { kAbsorb = 0, kUniform = 1 };

}  // namespace sedd
