// CPU row reductions shared by the kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu_utils.h"

namespace sedd {
namespace cpu {

// The one parallel grain rule of the CPU kernels: at::parallel_for hands out at least ~32k
// entries of work per task (rows of work_per_row entries each), so that short rows are batched
// and long rows go one per task. Results never depend on it (random numbers are keyed by row
// and column, not by task).
inline int64_t row_grain(int64_t work_per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(work_per_row, 1));
}

// Σ e^{p_y + off} and (if kWithL) Σ p_y over y ∈ [lo, hi) (the caller adds (hi − lo)·off to the
// second sum): SIMD lanes accumulate fp32 over blocks of 1024 entries, the block sums are added in
// fp64 (fp64 inputs: plain fp64 loop). `off` is a per-row shift of the log-scores (0 for plain
// score entropy; the network's scale_by_sigma offset for the fused projection); `col` (optional)
// a per-column one added before it (a projection's bias, for the reverse steps): e^{(p + col) + off}.
template <bool kWithL, typename T>
void row_sums(const T* p, int64_t lo, int64_t hi, double& sum_exp, double& sum_l,
              acc_t<T> off = acc_t<T>(0), const acc_t<T>* col = nullptr) {
  double se = 0.0, sl = 0.0;
  int64_t j = lo;
  if constexpr (std::is_same_v<T, double>) {
    for (; j < hi; ++j) {
      se += exp_acc((col != nullptr ? p[j] + col[j] : p[j]) + off);
      if (kWithL) sl += p[j];
    }
  } else {
    constexpr int64_t kBlock = 1024;
    while (j + kVecLen <= hi) {
      vfloat ae{}, al{};
      const int64_t end = std::min(hi, j + kBlock);
      for (; j + kVecLen <= end; j += kVecLen) {
        prefetch_ahead(p + j);
        const vfloat v = vload(p + j);
        ae += vexp((col != nullptr ? v + vload(col + j) : v) + off);
        if (kWithL) al += v;
      }
      se += hsum(ae);
      if (kWithL) sl += hsum(al);
    }
    for (; j < hi; ++j) {
      const float v = load(p + j);
      se += exp_f32((col != nullptr ? v + col[j] : v) + off);
      if (kWithL) sl += v;
    }
  }
  sum_exp += se;
  sum_l += sl;
}

}  // namespace cpu
}  // namespace sedd
