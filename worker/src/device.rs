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
