//! What the engine runs, decided once at start-up: precision and kernels
//! from what was asked and what the device (and its CPU) runs, with the
//! reason. The worker logs it once and shows it in `/health/ready`; a choice
//! the CPU cannot honour (bf16 without native bf16) is refused here, before
//! anything is loaded.

use std::fmt;

use serde_json::{Value, json};
use tch::Device;

use super::{EmbedError, LinearKernels, Precision, PrecisionChoice, cpu::CpuBf16};

/// The engine's precision and kernels on one device, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineChoice {
    /// The torch device.
    pub device: Device,
    /// What `--precision` asked for.
    pub asked: PrecisionChoice,
    /// What runs.
    pub precision: Precision,
    /// Why that precision, in a few words.
    pub precision_why: String,
    /// What `--embed-linear` asked for.
    pub kernels_asked: LinearKernels,
    /// The linear layers' kernels: `Aten` or `OneDnn`.
    pub kernels: LinearKernels,
    /// What the CPU runs natively (on a CPU device).
    pub cpu: Option<CpuBf16>,
}

impl EngineChoice {
    /// Decides for `device`; fails (with the reason) when the precision
    /// cannot run there or the kernels do not exist.
    pub fn decide(
        device: Device,
        asked: PrecisionChoice,
        kernels: LinearKernels,
    ) -> Result<Self, EmbedError> {
        let (precision, precision_why) = asked.resolve(device)?;
        let cpu = match device {
            Device::Cpu => Some(CpuBf16::get()?.clone()),
            _ => None,
        };
        Ok(Self {
            device,
            asked,
            precision,
            precision_why,
            kernels_asked: kernels,
            kernels: kernels.resolve(device)?,
            cpu,
        })
    }

    /// Why these kernels, in a few words.
    pub fn kernels_why(&self) -> String {
        match (self.kernels, self.kernels_asked) {
            (LinearKernels::OneDnn, _) => "oneDNN GEMMs on weights packed at load".into(),
            (_, LinearKernels::Aten) => "ATen's linear, as asked".into(),
            _ if self.device != Device::Cpu => "ATen's linear (cuBLAS)".into(),
            _ => "ATen's linear (this libtorch has no oneDNN linear operators)".into(),
        }
    }

    /// The choice as JSON, for `/health/ready` and benchmarks.
    pub fn to_json(&self) -> Value {
        json!({
            "precision": self.precision.as_str(),
            "precision_asked": self.asked.to_string(),
            "precision_why": self.precision_why,
            "kernels": self.kernels.as_str(),
            "kernels_why": self.kernels_why(),
            "cpu_bf16": self.cpu.as_ref().map(|c| c.native),
            "cpu": self.cpu.as_ref().map(|c| c.to_string()),
            "cpu_features": self.cpu.as_ref().map(|c| c.features.names()),
        })
    }
}

impl fmt::Display for EngineChoice {
    /// `bf16 (auto on a CPU with native bf16: yes (…)), onednn kernels (…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}), {} kernels ({})",
            self.precision,
            self.precision_why,
            self.kernels,
            self.kernels_why()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_auto_is_fp16_on_aten() {
        let c = EngineChoice::decide(Device::Cuda(0), PrecisionChoice::Auto, LinearKernels::Auto)
            .unwrap();
        assert_eq!(
            (c.precision, c.kernels),
            (Precision::Fp16, LinearKernels::Aten)
        );
        assert!(c.cpu.is_none());
        assert_eq!(c.to_json()["cpu_bf16"], Value::Null);
    }

    #[test]
    fn cpu_auto_follows_the_cpu_and_says_why() {
        let cpu = CpuBf16::get().unwrap();
        let c =
            EngineChoice::decide(Device::Cpu, PrecisionChoice::Auto, LinearKernels::Auto).unwrap();
        let want = if cpu.native {
            Precision::Bf16
        } else {
            Precision::Fp32
        };
        assert_eq!(c.precision, want, "{c}");
        let j = c.to_json();
        assert_eq!(j["precision_asked"], "auto");
        assert_eq!(j["cpu_bf16"], cpu.native);
        assert!(c.to_string().contains("native bf16"), "{c}");
        // fp32 runs on every CPU; bf16 only where native, refused elsewhere.
        assert!(
            EngineChoice::decide(
                Device::Cpu,
                PrecisionChoice::Exactly(Precision::Fp32),
                LinearKernels::Auto
            )
            .is_ok()
        );
        let bf16 = EngineChoice::decide(
            Device::Cpu,
            PrecisionChoice::Exactly(Precision::Bf16),
            LinearKernels::Auto,
        );
        match bf16 {
            Ok(c) => assert!(cpu.native && c.precision == Precision::Bf16),
            Err(e) => {
                assert!(!cpu.native);
                assert!(matches!(e, EmbedError::NoNativeBf16(_)), "{e}");
                let msg = e.to_string();
                assert!(!msg.contains('\n') && msg.contains("fp32"), "{msg}");
            }
        }
    }
}
