// Host-side argument checks shared by the CPU and CUDA entry points. Every message names the
// argument and what was expected.
#pragma once

#include <ATen/ATen.h>

#include <cstdio>
#include <string>
#include <type_traits>

#include "macros.h"

namespace sedd {

// Error messages are assembled into one std::string here and handed to TORCH_CHECK_* as a single
// argument. Streaming integers or IntArrayRefs through TORCH_CHECK's own variadic formatting
// crashed the process with torch 2.11 on the GPU machine (messages of strings only did not).
inline std::string to_str(const char* s) { return s; }
inline std::string to_str(const std::string& s) { return s; }
inline std::string to_str(c10::string_view s) { return std::string(s.data(), s.size()); }
inline std::string to_str(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
std::string to_str(T v) {
  return std::to_string(v);
}
template <typename... Ts>
std::string cat(const Ts&... xs) {
  std::string s;
  ((s += to_str(xs)), ...);
  return s;
}

#define SEDD_CHECK(cond, ...) TORCH_CHECK(cond, ::sedd::cat(__VA_ARGS__))
#define SEDD_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, ::sedd::cat(__VA_ARGS__))
#define SEDD_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, ::sedd::cat(__VA_ARGS__))

// Shapes, strides, dtypes and devices as strings for those messages.
inline std::string ints_str(c10::IntArrayRef v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  return s + "]";
}
inline std::string shape_str(const at::Tensor& t) { return ints_str(t.sizes()); }
inline std::string strides_str(const at::Tensor& t) { return ints_str(t.strides()); }
inline std::string dtype_str(const at::Tensor& t) { return c10::toString(t.scalar_type()); }
inline std::string device_str(const at::Tensor& t) { return t.device().str(); }

inline Graph parse_graph(const char* op, c10::string_view name) {
  if (name == "absorb" || name == "absorbing") return Graph::kAbsorb;
  if (name == "uniform") return Graph::kUniform;
  SEDD_CHECK_VALUE(false, op, ": graph must be 'absorb' or 'uniform', got '", std::string(name),
                    "'");
  return Graph::kAbsorb;
}

inline void check_same_device(const char* op, const at::Tensor& ref, const char* ref_name,
                              const at::Tensor& t, const char* name) {
  SEDD_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the same device as ",
              ref_name, " (", device_str(ref), "), got ", device_str(t));
}

inline void check_token_tensor(const char* op, const at::Tensor& t, const char* name,
                               int64_t B, int64_t L) {
  SEDD_CHECK_TYPE(t.scalar_type() == at::kLong, op, ": ", name,
                   " must be an int64 tensor of token ids, got ", dtype_str(t));
  SEDD_CHECK_VALUE(t.dim() == 2 && t.size(0) == B && t.size(1) == L, op, ": ", name,
                    " must have shape [B, L] = [", B, ", ", L, "], got ", shape_str(t));
}

// log-scores: [B, L, V] in one of the kernels' dtypes.
inline void check_log_score(const char* op, const at::Tensor& t) {
  SEDD_CHECK_VALUE(t.dim() == 3, op, ": log_score must have shape [B, L, V], got ", t.dim(),
                   " dimensions ", shape_str(t));
  const auto dt = t.scalar_type();
  SEDD_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf || dt == at::kDouble,
                  op, ": log_score must be float32, bfloat16, float16 or float64, got ",
                  dtype_str(t));
}

inline void check_floating(const char* op, const at::Tensor& t, const char* name) {
  SEDD_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor, got ", dtype_str(t));
}

// The layout every row kernel reads: log_score [B, L, V] (floating, unit stride along V,
// V < 2^31), a token tensor [B, L] int64 and a per-sequence floating tensor [B], on one device.
struct RowsShape {
  int64_t B, L, V;
};

inline RowsShape check_rows(const char* op, const at::Tensor& log_score, const at::Tensor& tokens,
                            const char* tokens_name, const at::Tensor& per_seq,
                            const char* per_seq_name) {
  check_log_score(op, log_score);
  RowsShape r{log_score.size(0), log_score.size(1), log_score.size(2)};
  check_token_tensor(op, tokens, tokens_name, r.B, r.L);
  check_floating(op, per_seq, per_seq_name);
  SEDD_CHECK_VALUE(per_seq.dim() == 1 && per_seq.size(0) == r.B, op, ": ", per_seq_name,
                   " must have shape [B] = [", r.B, "], got ", shape_str(per_seq));
  check_same_device(op, log_score, "log_score", tokens, tokens_name);
  check_same_device(op, log_score, "log_score", per_seq, per_seq_name);
  SEDD_CHECK_VALUE(r.V <= 1 || log_score.stride(2) == 1, op,
                   ": log_score must have unit stride along V (the last dimension), got strides ",
                   strides_str(log_score));
  SEDD_CHECK_VALUE(r.V < (int64_t(1) << 31), op, ": log_score must have V < 2^31, got ", r.V);
  return r;
}

}  // namespace sedd
