// Hopper's bridge to the oneDNN linear kernels that libtorch registers as
// `mkldnn::` operators (the ones torch.compile's CPU freezing uses). tch has
// bindings for ATen's native functions only, so the worker reaches these
// through the dispatcher, boxed. See worker/src/embed/onednn.rs.
//
// Tensors cross the boundary as `at::Tensor*` (tch's C_tensor). A function
// returns NULL on success, else a malloc'd error message for
// hopper_onednn_free_error: torch's message without its C++ stack trace.

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/stack.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

namespace {

char *error_of(const char *what) { return strdup(what ? what : "unknown error"); }

std::optional<c10::OperatorHandle> find(const char *name, const char *overload) {
  return c10::Dispatcher::singleton().findSchema({name, overload});
}

// Calls `op` on `stack`; stores its one tensor result in *out.
char *call(const c10::OperatorHandle &op, torch::jit::Stack &stack, at::Tensor **out) {
  try {
    op.callBoxed(&stack);
    if (stack.size() != 1 || !stack[0].isTensor()) {
      return error_of("the operator did not return one tensor");
    }
    *out = new at::Tensor(stack[0].toTensor());
    return nullptr;
  } catch (const c10::Error &e) {
    return error_of(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return error_of(e.what());
  } catch (...) {
    return error_of(nullptr);
  }
}

} // namespace

extern "C" {

void hopper_onednn_free_error(char *error) { free(error); }

// 1 when this libtorch has oneDNN and registers the linear operators used below.
int hopper_onednn_linear_available() {
  try {
    return at::hasMKLDNN() && find("mkldnn::_reorder_linear_weight", "").has_value() &&
           find("mkldnn::_linear_pointwise", "").has_value();
  } catch (...) {
    return 0;
  }
}

// `weight` [out, in] → the same weight in oneDNN's blocked layout (an opaque
// mkldnn tensor), packed once at load time.
char *hopper_onednn_pack_linear_weight(at::Tensor *weight, at::Tensor **out) {
  try {
    static const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_reorder_linear_weight", "");
    torch::jit::Stack stack{c10::IValue(*weight), c10::IValue()};
    return call(op, stack, out);
  } catch (const c10::Error &e) {
    return error_of(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return error_of(e.what());
  }
}

// y = x · Wᵀ + b, then `attr` ("none", "gelu", "relu", …) with `algorithm`
// ("" or, for gelu, "none" | "tanh"). x is [rows, in] and contiguous.
char *hopper_onednn_linear(at::Tensor *x, at::Tensor *packed_weight, at::Tensor *bias,
                           const char *attr, const char *algorithm, at::Tensor **out) {
  try {
    static const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack{
        c10::IValue(*x),
        c10::IValue(*packed_weight),
        bias ? c10::IValue(*bias) : c10::IValue(),
        c10::IValue(std::string(attr)),
        c10::IValue(c10::List<std::optional<at::Scalar>>()),
        c10::IValue(std::string(algorithm)),
    };
    return call(op, stack, out);
  } catch (const c10::Error &e) {
    return error_of(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return error_of(e.what());
  }
}

} // extern "C"
