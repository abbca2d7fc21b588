//! Linear layers on oneDNN with pre-packed weights: the CPU fast path of
//! [`super::model`].
//!
//! On CPU, ATen runs an fp32 `linear` as an MKL sgemm on the weights as
//! stored. libtorch also registers oneDNN's linear kernels (the
//! `mkldnn::_linear_pointwise` operators torch.compile's CPU freezing
//! emits): the weight is reordered once, at load time, into oneDNN's
//! blocked layout, and each call is one JIT-compiled GEMM for this CPU. Same
//! fp32 arithmetic (no reduced-precision mode), ~1.3× the GEMM throughput on
//! this project's AMD EPYC (`scripts/bench/embed` shows the end-to-end
//! effect against `--linear aten`). tch binds ATen's native functions only,
//! so a small C++ bridge (`worker/cpp/onednn_linear.cpp`, built by
//! `build.rs`) calls these operators through the dispatcher.
//!
//! [`available`] says whether this libtorch has them (CPU builds for x86 and
//! arm64 do); the encoder falls back to `linear` when it does not.
//!
//! Memory: oneDNN caches a primitive per GEMM shape, 1,024 by default, and
//! each holds megabytes of scratch space; batch shapes vary (rows = texts ×
//! longest), so the cache grew the worker by ~300 MB over 2,000 texts.
//! [`bound_primitive_cache`] caps it at [`PRIMITIVE_CACHE_CAPACITY`] at
//! start-up; re-creating a primitive costs far less than the GEMM it runs.

use std::{
    ffi::{CStr, c_char},
    sync::OnceLock,
};

use tch::{TchError, Tensor};

/// libtorch's `at::Tensor`, opaque here (tch's `C_tensor`).
#[repr(C)]
struct CTensor {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn hopper_onednn_free_error(error: *mut c_char);
    fn hopper_onednn_linear_available() -> i32;
    fn hopper_onednn_pack_linear_weight(
        weight: *mut CTensor,
        out: *mut *mut CTensor,
    ) -> *mut c_char;
    fn hopper_onednn_linear(
        x: *mut CTensor,
        packed_weight: *mut CTensor,
        bias: *mut CTensor,
        attr: *const c_char,
        algorithm: *const c_char,
        out: *mut *mut CTensor,
    ) -> *mut c_char;
}

/// oneDNN primitives cached at most: the 4 GEMM shapes of one forward
/// pass (QKV, attention output, FFN in and out) for each of up to 4 streams.
pub const PRIMITIVE_CACHE_CAPACITY: usize = 16;

/// The environment variable oneDNN reads its cache capacity from, once,
/// when it creates its first primitive.
pub const PRIMITIVE_CACHE_ENV: &str = "ONEDNN_PRIMITIVE_CACHE_CAPACITY";

/// Caps oneDNN's primitive cache at [`PRIMITIVE_CACHE_CAPACITY`] unless
/// the environment already sets [`PRIMITIVE_CACHE_ENV`]. Call it first
/// thing in `main`, before any oneDNN work.
///
/// # Safety
///
/// Sets an environment variable: no other thread may run yet (see
/// [`std::env::set_var`]).
pub unsafe fn bound_primitive_cache() {
    if std::env::var_os(PRIMITIVE_CACHE_ENV).is_none() {
        // SAFETY: the caller promises that this process has one thread.
        unsafe { std::env::set_var(PRIMITIVE_CACHE_ENV, PRIMITIVE_CACHE_CAPACITY.to_string()) };
    }
}

/// Whether libtorch has oneDNN and its linear operators (checked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    // SAFETY: no arguments; the bridge catches every C++ exception.
    *AVAILABLE.get_or_init(|| unsafe { hopper_onednn_linear_available() } == 1)
}

/// Turns the bridge's answer into a tensor or an error.
///
/// SAFETY: `error` is null or a message from the bridge (freed here); on
/// success `out` is a tensor the bridge allocated for us.
unsafe fn finish(error: *mut c_char, out: *mut CTensor) -> Result<Tensor, TchError> {
    if error.is_null() {
        // SAFETY: the bridge returned a fresh `at::Tensor*` we now own.
        return Ok(unsafe { Tensor::from_ptr(out.cast()) });
    }
    // SAFETY: a NUL-terminated string from strdup, freed by its own allocator.
    let message = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .into_owned();
    unsafe { hopper_onednn_free_error(error) };
    Err(TchError::Torch(format!("oneDNN linear: {message}")))
}

/// `weight` `[out, in]` (fp32 or bf16, CPU) packed for [`linear`].
pub fn pack_weight(weight: &Tensor) -> Result<Tensor, TchError> {
    let weight = weight.f_contiguous()?;
    let mut out = std::ptr::null_mut();
    // SAFETY: `weight` outlives the call; the bridge copies what it keeps.
    unsafe {
        let error = hopper_onednn_pack_linear_weight(weight.as_ptr().cast_mut().cast(), &mut out);
        finish(error, out)
    }
}

/// An activation oneDNN applies to the GEMM's output in the same pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOp {
    /// None: `x · Wᵀ + b`.
    None,
    /// Exact (erf) GELU.
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
    /// ReLU.
    Relu,
}

impl PostOp {
    fn attr(self) -> (&'static CStr, &'static CStr) {
        match self {
            PostOp::None => (c"none", c""),
            PostOp::Gelu => (c"gelu", c"none"),
            PostOp::GeluTanh => (c"gelu", c"tanh"),
            PostOp::Relu => (c"relu", c""),
        }
    }
}

/// `post(x · Wᵀ + b)` for `x` `[rows, in]`, with `packed` from
/// [`pack_weight`] and `bias` `[out]` in `x`'s kind.
pub fn linear(
    x: &Tensor,
    packed: &Tensor,
    bias: &Tensor,
    post: PostOp,
) -> Result<Tensor, TchError> {
    let x = x.f_contiguous()?;
    let (attr, algorithm) = post.attr();
    let mut out = std::ptr::null_mut();
    // SAFETY: every tensor outlives the call; the strings are static.
    unsafe {
        let error = hopper_onednn_linear(
            x.as_ptr().cast_mut().cast(),
            packed.as_ptr().cast_mut().cast(),
            bias.as_ptr().cast_mut().cast(),
            attr.as_ptr(),
            algorithm.as_ptr(),
            &mut out,
        );
        finish(error, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn packed_linear_matches_aten_linear() {
        assert!(available(), "this libtorch should have oneDNN");
        let _g = tch::no_grad_guard();
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([37, 96], opts);
        let w = Tensor::randn([160, 96], opts);
        let b = Tensor::randn([160], opts);
        let packed = pack_weight(&w).unwrap();
        for (post, reference) in [
            (PostOp::None, x.linear(&w, Some(&b))),
            (PostOp::Gelu, x.linear(&w, Some(&b)).gelu("none")),
            (PostOp::GeluTanh, x.linear(&w, Some(&b)).gelu("tanh")),
            (PostOp::Relu, x.linear(&w, Some(&b)).relu()),
        ] {
            let y = linear(&x, &packed, &b, post).unwrap();
            assert_eq!(y.size(), [37, 160]);
            let err = (y - &reference).abs().max().double_value(&[]);
            assert!(err < 1e-3, "{post:?}: max abs error {err}");
        }
    }

    #[test]
    fn a_bad_call_is_an_error_not_a_crash() {
        let opts = (Kind::Float, Device::Cpu);
        let packed = pack_weight(&Tensor::ones([8, 4], opts)).unwrap();
        let wrong = Tensor::ones([3, 5], opts);
        let err = linear(&wrong, &packed, &Tensor::zeros([8], opts), PostOp::None).unwrap_err();
        assert!(err.to_string().contains("oneDNN linear"), "{err}");
    }
}
