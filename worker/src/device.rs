//! Torch device selection, for one binary that serves CPU and CUDA.
//!
//! The binary links only the CPU libtorch. At start-up [`load_cuda`] tries to
//! `dlopen` `libtorch_cuda.so` with `RTLD_GLOBAL` (found through
//! `LD_LIBRARY_PATH` on a GPU machine); when it loads and a GPU is visible,
//! `auto` picks CUDA, otherwise CPU.

use std::{ffi::CString, str::FromStr};

use tch::Device;

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("`{s}` is not auto, cpu, cuda or cuda:N")),
        }
    }
}

/// Loads libtorch's CUDA backend if it can be found; true when loaded.
pub fn load_cuda() -> bool {
    let name = CString::new("libtorch_cuda.so").expect("no NUL");
    // SAFETY: dlopen with a valid C string; the handle is deliberately kept
    // open for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}

/// Resolves a choice to a device, failing when CUDA is asked for and absent.
pub fn resolve(choice: DeviceChoice) -> anyhow::Result<Device> {
    let cuda = matches!(choice, DeviceChoice::Auto | DeviceChoice::Cuda(_))
        && load_cuda()
        && tch::Cuda::is_available();
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if cuda => Ok(Device::Cuda(0)),
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) if cuda && (n as i64) < tch::Cuda::device_count() => {
            Ok(Device::Cuda(n))
        }
        DeviceChoice::Cuda(n) => anyhow::bail!(
            "cuda:{n} asked for, but libtorch_cuda.so cannot be loaded or no such GPU is visible"
        ),
    }
}

/// Memory of CUDA device `index`, as the CUDA runtime reports it:
/// `(used, total)` bytes, for every process on the GPU. `None` when the CUDA
/// runtime's symbols are not loaded or it reports an error (no GPU).
///
/// The runtime (`libcudart`) is already in the process: libtorch needs it, so
/// its symbols are looked up in the global namespace rather than linked.
pub fn cuda_memory(index: usize) -> Option<(u64, u64)> {
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    let lookup = |name: &str| {
        let name = CString::new(name).expect("no NUL");
        // SAFETY: dlsym on the global namespace with a valid C string.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!sym.is_null()).then_some(sym)
    };
    let set_device = lookup("cudaSetDevice")?;
    let mem_get_info = lookup("cudaMemGetInfo")?;
    // SAFETY: the symbols are the CUDA runtime's, with these C signatures
    // (cudaError_t is an int; 0 is success). cudaSetDevice only changes the
    // calling thread's current device.
    unsafe {
        let set_device: SetDevice = std::mem::transmute(set_device);
        let mem_get_info: MemGetInfo = std::mem::transmute(mem_get_info);
        if set_device(i32::try_from(index).ok()?) != 0 {
            return None;
        }
        let (mut free, mut total) = (0usize, 0usize);
        if mem_get_info(&mut free, &mut total) != 0 {
            return None;
        }
        Some(((total - free.min(total)) as u64, total as u64))
    }
}

/// Sets the GPU memory gauges of `device` (nothing on CPU).
pub fn export_gpu_memory(device: Device) {
    let Device::Cuda(index) = device else { return };
    if let Some((used, total)) = cuda_memory(index) {
        let label = format!("cuda{index}");
        metrics::gauge!(hopper_shared::metrics::GPU_MEMORY_USED_BYTES, "device" => label.clone())
            .set(used as f64);
        metrics::gauge!(hopper_shared::metrics::GPU_MEMORY_TOTAL_BYTES, "device" => label)
            .set(total as f64);
    }
}

/// A one-line description of the torch runtime on `device`, checked by
/// running a small computation there.
pub fn describe(device: Device) -> anyhow::Result<String> {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(device);
    let sum = f64::try_from(t.sum(tch::Kind::Float))?;
    anyhow::ensure!((sum - 6.0).abs() < 1e-6, "torch self-check failed: {sum}");
    Ok(format!(
        "torch on {device:?} ({} threads)",
        tch::get_num_threads()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_memory_is_absent_without_a_gpu_and_never_fails() {
        // On a CPU machine the runtime is loaded (libtorch_cpu needs it) but
        // reports no device: no numbers, no crash. On a GPU it reports both.
        match cuda_memory(0) {
            None => assert!(!tch::Cuda::is_available()),
            Some((used, total)) => assert!(used <= total && total > 0),
        }
        export_gpu_memory(Device::Cpu);
    }

    #[test]
    fn device_choices_parse() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn torch_runs_on_the_cpu() {
        let line = describe(Device::Cpu).unwrap();
        assert!(line.contains("Cpu"), "{line}");
    }
}
