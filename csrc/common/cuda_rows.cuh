// Row-parallel launch shapes shared by the CUDA kernels: a block of kRowBlock threads per row for
// long rows, a warp per row (kRowBlock / 32 rows per block) for rows shorter than 1024 entries.
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

}  // namespace sedd
