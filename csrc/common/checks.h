// Host-side argument checks shared by the CPU and CUDA entry points. Every message names the
// argument and what was expected.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "macros.h"

namespace sedd {

inline Graph parse_graph(const char* op, c10::string_view name) {
  if (name == "absorb" || name == "absorbing") return Graph::kAbsorb;
  if (name == "uniform") return Graph::kUniform;
  TORCH_CHECK_VALUE(false, op, ": graph must be 'absorb' or 'uniform', got '", std::string(name),
                    "'");
  return Graph::kAbsorb;
}

inline void check_same_device(const char* op, const at::Tensor& ref, const char* ref_name,
                              const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the same device as ",
              ref_name, " (", ref.device(), "), got ", t.device());
}

inline void check_token_tensor(const char* op, const at::Tensor& t, const char* name,
                               int64_t B, int64_t L) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, op, ": ", name,
                   " must be an int64 tensor of token ids, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == B && t.size(1) == L, op, ": ", name,
                    " must have shape [B, L] = [", B, ", ", L, "], got ", t.sizes());
}

inline void check_floating(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor, got ", t.scalar_type());
}

}  // namespace sedd
