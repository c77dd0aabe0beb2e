// C++ checks of the ops, run by CTest: hand-computed values of score_entropy through the
// dispatcher (so the TORCH_LIBRARY registration is exercised), input errors, and the shared
// exp() against libm over its whole range (scalar and SIMD forms).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include "common/cpu_utils.h"
#include "common/fastmath.h"

namespace {

int failures = 0;

void expect_near(const char* what, double got, double want, double tol) {
  if (!(std::fabs(got - want) <= tol)) {
    std::printf("FAIL %s: got %.17g, want %.17g (tol %g)\n", what, got, want, tol);
    ++failures;
  } else {
    std::printf("ok   %s: %.12g\n", what, got);
  }
}

void expect(const char* what, bool cond) {
  std::printf("%s %s\n", cond ? "ok  " : "FAIL", what);
  if (!cond) ++failures;
}

using ForwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, c10::string_view);
using BackwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, c10::string_view);
using WithGradFn = at::Tensor(at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, c10::string_view,
                              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&);

at::Tensor longs(std::initializer_list<int64_t> v, int64_t B, int64_t L) {
  return at::tensor(std::vector<int64_t>(v), at::kLong).reshape({B, L});
}

}  // namespace

int main() {
  auto fwd = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("sedd::score_entropy", "")
                 .typed<ForwardFn>();
  auto bwd = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("sedd::score_entropy_backward", "")
                 .typed<BackwardFn>();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);

  // Absorbing, V = 3 (mask M = 2), σ = log 2 so r = 1/expm1(σ) = 1.
  // Row (x_t = M, x_0 = 0, ℓ = [0, log 2, 5]): SE = e^0 + e^{log 2} − r·0 + r(log r − 1) = 2.
  // Row (x_t = 1): not masked, SE = 0. ∂SE/∂ℓ on the masked row = [1 − 1, 2, 0] = [0, 2, 0].
  {
    at::Tensor ls = at::tensor({0.0, std::log(2.0), 5.0, 0.3, 0.1, 0.2}, f64).reshape({1, 2, 3});
    at::Tensor xt = longs({2, 1}, 1, 2), x0 = longs({0, 1}, 1, 2);
    at::Tensor sigma = at::tensor({std::log(2.0)}, f64);
    at::Tensor out = fwd.call(ls, xt, x0, sigma, "absorb");
    expect_near("absorb masked row = 2", out[0][0].item<double>(), 2.0, 1e-14);
    expect_near("absorb unmasked row = 0", out[0][1].item<double>(), 0.0, 0.0);
    at::Tensor g = bwd.call(at::ones({1, 2}, f64), ls, xt, x0, sigma, "absorb");
    expect_near("absorb grad[y=x0]", g[0][0][0].item<double>(), 0.0, 1e-14);
    expect_near("absorb grad[y=1]", g[0][0][1].item<double>(), 2.0, 1e-14);
    expect_near("absorb grad[y=M]", g[0][0][2].item<double>(), 0.0, 0.0);
    expect_near("absorb grad unmasked row", g[0][1].abs().sum().item<double>(), 0.0, 0.0);
    // fp32 input through the SIMD path gives the same value
    at::Tensor out32 = fwd.call(ls.to(at::kFloat), xt, x0, sigma.to(at::kFloat), "absorb");
    expect_near("absorb fp32", out32[0][0].item<double>(), 2.0, 1e-6);
  }

  // The in-place op of the fused projection: the same absorbing row given as ℓ − 1 with offset 1,
  // gradient scale 3: loss 2, and the row becomes 3·[0, 2, 0]; the unmasked row becomes 0.
  {
    auto with_grad = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("sedd::score_entropy_with_grad_", "")
                         .typed<WithGradFn>();
    at::Tensor ls = at::tensor({-1.0, std::log(2.0) - 1.0, 4.0, 0.3, 0.1, 0.2}, f64).reshape({1, 2, 3});
    at::Tensor xt = longs({2, 1}, 1, 2), x0 = longs({0, 1}, 1, 2);
    at::Tensor sigma = at::tensor({std::log(2.0)}, f64);
    std::optional<at::Tensor> off = at::ones({1, 2}, f64), gs = at::full({1, 2}, 3.0, f64);
    at::Tensor out = with_grad.call(ls, xt, x0, sigma, "absorb", off, gs);
    expect_near("with_grad_ loss = 2", out[0][0].item<double>(), 2.0, 1e-14);
    expect_near("with_grad_ grad[y=x0]", ls[0][0][0].item<double>(), 0.0, 1e-14);
    expect_near("with_grad_ grad[y=1]", ls[0][0][1].item<double>(), 6.0, 1e-13);
    expect_near("with_grad_ grad[y=M]", ls[0][0][2].item<double>(), 0.0, 0.0);
    expect_near("with_grad_ unmasked row", ls[0][1].abs().sum().item<double>(), 0.0, 0.0);
  }

  // Uniform, V = n = 2, x_t = x_0 = 0, ℓ = [0, log 3], σ = log 3: e = 2, ρ = e/(e+n) = 1/2,
  // A = 3/2, N = (log 3)/2, SE = A − ρN + ((n−1)/n)·ρ(log ρ − 1) = 5/4 − (log 6)/4.
  {
    at::Tensor ls = at::tensor({0.0, std::log(3.0)}, f64).reshape({1, 1, 2});
    at::Tensor x = longs({0}, 1, 1);
    at::Tensor sigma = at::tensor({std::log(3.0)}, f64);
    at::Tensor out = fwd.call(ls, x, x, sigma, "uniform");
    expect_near("uniform x=x0", out[0][0].item<double>(), 1.25 - std::log(6.0) / 4, 1e-14);
    // ∂SE/∂ℓ_1 = (e^{ℓ_1} − ρ)/n = (3 − 1/2)/2 = 5/4; ∂SE/∂ℓ_0 = 0 (y = x).
    at::Tensor g = bwd.call(at::ones({1, 1}, f64), ls, x, x, sigma, "uniform");
    expect_near("uniform grad[y=1]", g[0][0][1].item<double>(), 1.25, 1e-14);
    expect_near("uniform grad[y=x]", g[0][0][0].item<double>(), 0.0, 0.0);
  }

  // Input errors are c10::Error with the argument named, never a crash.
  {
    at::Tensor ls = at::zeros({1, 1, 3}, f64);
    at::Tensor xt = longs({2}, 1, 1), x0 = longs({0}, 1, 1);
    auto raises = [&](const char* what, const char* needle, auto&& fn) {
      try {
        fn();
        expect(what, false);
      } catch (const c10::Error& e) {
        expect(what, std::string(e.what()).find(needle) != std::string::npos);
      }
    };
    raises("sigma <= 0 rejected", "sigma must be > 0",
           [&] { fwd.call(ls, xt, x0, at::zeros({1}, f64), "absorb"); });
    raises("x_t out of range rejected", "x_t must hold token ids",
           [&] { fwd.call(ls, longs({3}, 1, 1), x0, at::ones({1}, f64), "absorb"); });
    raises("unknown graph rejected", "graph must be 'absorb' or 'uniform'",
           [&] { fwd.call(ls, xt, x0, at::ones({1}, f64), "absorbing-ish"); });
  }

  // exp_f32 (scalar) and its SIMD form against libm.
  {
    double worst = 0.0;
    float worst_x = 0.0f;
    bool simd_same = true;
    for (float x = -86.5f; x < 88.72f; x += 1.3e-3f) {
      const double want = std::exp(static_cast<double>(x));
      const double rel = std::fabs(sedd::exp_f32(x) - want) / want;
      if (rel > worst) { worst = rel; worst_x = x; }
      sedd::cpu::vfloat v = sedd::cpu::vfloat{} + x;
      const float s = sedd::cpu::vexp(v)[0];
      if (std::fabs(s - sedd::exp_f32(x)) > 2e-7 * want) simd_same = false;
    }
    std::printf("     exp_f32 max relative error %.3g at x = %g\n", worst, worst_x);
    expect("exp_f32 within 2e-7 relative of libm on [-86.5, 88.72]", worst < 2e-7);
    expect("SIMD exp equals scalar exp", simd_same);
    const float inf = std::numeric_limits<float>::infinity();
    expect("exp(+inf) = +inf", sedd::exp_f32(inf) == inf);
    expect("exp(88.73) = +inf (overflow is not clamped)", sedd::exp_f32(88.73f) == inf);
    expect("exp(-inf) = 0", sedd::exp_f32(-inf) == 0.0f);
    expect("exp(-120) = 0", sedd::exp_f32(-120.0f) == 0.0f);
    expect("exp(NaN) = NaN", std::isnan(sedd::exp_f32(std::nanf(""))));
    expect("exp(0) = 1", sedd::exp_f32(0.0f) == 1.0f);
  }

  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
