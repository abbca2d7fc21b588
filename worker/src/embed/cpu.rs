//! What this CPU runs natively, as libtorch sees it: bf16 or not.
//!
//! oneDNN's bf16 GEMMs (and the weight packing before them) need
//! avx512bw + avx512vl + avx512dq, or avx_ne_convert; torch checks exactly
//! that (`mkldnn_bf16_device_check`) and throws on any other CPU. ATen's own
//! bf16 kernels run anywhere but, without those instructions, emulate the
//! format: measured on an AVX2-only CPU, bf16 through ATen embedded 8.2
//! sentences/s against fp32's 60.9. So bf16 on the CPU is worth it only where
//! [`CpuBf16::native`] holds, and [`super::PrecisionChoice::Auto`] picks it
//! only there.
//!
//! The answer comes from libtorch itself: its cpuinfo (exported by libc10),
//! asked through the C++ bridge (`worker/cpp/cpu_features.cpp`); where
//! cpuinfo cannot initialise, from `std::arch`'s detection. The environment
//! variable [`CPU_BF16_ENV`] overrides it, so that both paths can be tested
//! (and run) on any CPU: `0` behaves as a CPU without native bf16, `1` as
//! one with it (trust the operator: on a CPU without it, oneDNN then fails
//! at load with its own reason).

use std::{fmt, sync::OnceLock};

use serde::Serialize;

use super::EmbedError;

/// Overrides the detection: `0` (no native bf16), `1` (native), `auto`.
pub const CPU_BF16_ENV: &str = "HOPPER_CPU_BF16";

/// Feature bits of `hopper_cpu_features` (worker/cpp/cpu_features.cpp).
mod bits {
    pub const AVX2: i64 = 1 << 0;
    pub const AVX512BW: i64 = 1 << 1;
    pub const AVX512VL: i64 = 1 << 2;
    pub const AVX512DQ: i64 = 1 << 3;
    pub const AVX_NE_CONVERT: i64 = 1 << 4;
    pub const AVX512_BF16: i64 = 1 << 5;
    pub const AMX_BF16: i64 = 1 << 6;
    pub const ARM_BF16: i64 = 1 << 7;
}

unsafe extern "C" {
    fn hopper_cpu_features() -> i64;
}

/// The instruction sets that decide bf16, as one detector saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuFeatures {
    /// AVX2 (every x86 CPU this project targets).
    pub avx2: bool,
    /// AVX-512 byte/word.
    pub avx512bw: bool,
    /// AVX-512 vector length.
    pub avx512vl: bool,
    /// AVX-512 doubleword/quadword.
    pub avx512dq: bool,
    /// AVX-NE-CONVERT (bf16 conversions without AVX-512).
    pub avx_ne_convert: bool,
    /// AVX512_BF16 (bf16 dot products; faster, not required).
    pub avx512_bf16: bool,
    /// AMX bf16 tiles (faster still, not required).
    pub amx_bf16: bool,
    /// Arm's BF16 extension.
    pub arm_bf16: bool,
}

impl CpuFeatures {
    fn from_bits(b: i64) -> Self {
        let has = |bit: i64| b & bit != 0;
        Self {
            avx2: has(bits::AVX2),
            avx512bw: has(bits::AVX512BW),
            avx512vl: has(bits::AVX512VL),
            avx512dq: has(bits::AVX512DQ),
            avx_ne_convert: has(bits::AVX_NE_CONVERT),
            avx512_bf16: has(bits::AVX512_BF16),
            amx_bf16: has(bits::AMX_BF16),
            arm_bf16: has(bits::ARM_BF16),
        }
    }

    /// Whether torch's oneDNN runs bf16 natively on these features: its
    /// own rule (avx512bw, avx512vl and avx512dq, or avx_ne_convert; Arm's
    /// bf16 on arm64).
    pub fn bf16_native(&self) -> bool {
        (self.avx512bw && self.avx512vl && self.avx512dq) || self.avx_ne_convert || self.arm_bf16
    }

    /// The names of the features present, space separated.
    pub fn names(&self) -> String {
        [
            (self.avx2, "avx2"),
            (self.avx512bw, "avx512bw"),
            (self.avx512vl, "avx512vl"),
            (self.avx512dq, "avx512dq"),
            (self.avx_ne_convert, "avx_ne_convert"),
            (self.avx512_bf16, "avx512_bf16"),
            (self.amx_bf16, "amx_bf16"),
            (self.arm_bf16, "arm_bf16"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// As libtorch's cpuinfo sees them; `None` when it cannot initialise.
    pub fn from_libtorch() -> Option<Self> {
        // SAFETY: no arguments; cpuinfo_initialize is idempotent and
        // thread-safe, and the bridge only reads its flags.
        let b = unsafe { hopper_cpu_features() };
        (b >= 0).then(|| Self::from_bits(b))
    }

    /// As the Rust standard library detects them (no avx_ne_convert: its
    /// detection is not stable yet).
    pub fn from_std() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Self {
                avx2: has!("avx2"),
                avx512bw: has!("avx512bw"),
                avx512vl: has!("avx512vl"),
                avx512dq: has!("avx512dq"),
                avx512_bf16: has!("avx512bf16"),
                ..Self::default()
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Self {
                arm_bf16: std::arch::is_aarch64_feature_detected!("bf16"),
                ..Self::default()
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        Self::default()
    }
}

/// Who decided [`CpuBf16::native`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bf16Source {
    /// libtorch's cpuinfo, through the C++ bridge.
    Libtorch,
    /// `std::arch` (cpuinfo could not initialise).
    Std,
    /// [`CPU_BF16_ENV`].
    Override,
}

/// Whether this CPU runs bf16 natively, and how that was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuBf16 {
    /// oneDNN's bf16 kernels run here.
    pub native: bool,
    /// Who said so.
    pub source: Bf16Source,
    /// The CPU's features as detected (whatever the override says).
    pub features: CpuFeatures,
}

impl CpuBf16 {
    /// Decides from the detected `features` and the override's value
    /// (`None` when [`CPU_BF16_ENV`] is unset).
    pub fn decide(
        features: CpuFeatures,
        source: Bf16Source,
        env: Option<&str>,
    ) -> Result<Self, String> {
        let forced = match env.map(|v| v.trim().to_ascii_lowercase()) {
            None => None,
            Some(v) => match v.as_str() {
                "" | "auto" => None,
                "0" | "false" | "no" | "off" => Some(false),
                "1" | "true" | "yes" | "on" => Some(true),
                _ => return Err(format!("{CPU_BF16_ENV}={v} is not 0, 1 or auto")),
            },
        };
        Ok(match forced {
            Some(native) => Self {
                native,
                source: Bf16Source::Override,
                features,
            },
            None => Self {
                native: features.bf16_native(),
                source,
                features,
            },
        })
    }

    /// This process's CPU (detected once; the override read once).
    pub fn get() -> Result<&'static Self, EmbedError> {
        static CPU: OnceLock<Result<CpuBf16, String>> = OnceLock::new();
        CPU.get_or_init(|| {
            let (features, source) = match CpuFeatures::from_libtorch() {
                Some(f) => (f, Bf16Source::Libtorch),
                None => (CpuFeatures::from_std(), Bf16Source::Std),
            };
            let env = std::env::var(CPU_BF16_ENV).ok();
            Self::decide(features, source, env.as_deref())
        })
        .as_ref()
        .map_err(|e| EmbedError::BadOptions(e.clone()))
    }

    /// Why bf16 is (not) native here, in a few words.
    pub fn reason(&self) -> String {
        let f = &self.features;
        match (self.source, self.native) {
            (Bf16Source::Override, native) => format!("{CPU_BF16_ENV}={}", u8::from(native)),
            (_, true) if f.avx512bw && f.avx512vl && f.avx512dq => {
                "avx512bw, avx512vl and avx512dq".into()
            }
            (_, true) if f.avx_ne_convert => "avx_ne_convert".into(),
            (_, true) => "arm bf16".into(),
            (_, false) => "no avx512bw+avx512vl+avx512dq and no avx_ne_convert".into(),
        }
    }

    /// [`Self::reason`] and who decided: `no avx512bw…, per libtorch's cpuinfo`.
    pub fn explained(&self) -> String {
        let by = match self.source {
            Bf16Source::Libtorch => ", per libtorch's cpuinfo",
            Bf16Source::Std => ", per std::arch",
            Bf16Source::Override => "",
        };
        format!("{}{by}", self.reason())
    }
}

impl fmt::Display for CpuBf16 {
    /// `native bf16: no (no avx512bw…, per libtorch's cpuinfo)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = if self.native { "yes" } else { "no" };
        write!(f, "native bf16: {yes} ({})", self.explained())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avx2() -> CpuFeatures {
        CpuFeatures {
            avx2: true,
            ..CpuFeatures::default()
        }
    }

    fn avx512() -> CpuFeatures {
        CpuFeatures {
            avx512bw: true,
            avx512vl: true,
            avx512dq: true,
            ..avx2()
        }
    }

    #[test]
    fn torchs_rule_decides_native_bf16() {
        assert!(!avx2().bf16_native());
        assert!(avx512().bf16_native());
        let partial = CpuFeatures {
            avx512dq: false,
            ..avx512()
        };
        assert!(!partial.bf16_native(), "all three AVX-512 sets are needed");
        let ne = CpuFeatures {
            avx_ne_convert: true,
            ..avx2()
        };
        assert!(ne.bf16_native());
    }

    #[test]
    fn the_override_wins_and_says_so() {
        let lt = Bf16Source::Libtorch;
        let c = CpuBf16::decide(avx512(), lt, Some("0")).unwrap();
        assert!(!c.native && c.source == Bf16Source::Override);
        assert!(c.to_string().contains("HOPPER_CPU_BF16=0"), "{c}");
        let c = CpuBf16::decide(avx2(), lt, Some("1")).unwrap();
        assert!(c.native);
        for auto in [None, Some("auto"), Some("")] {
            let c = CpuBf16::decide(avx2(), lt, auto).unwrap();
            assert!(!c.native && c.source == lt);
            assert!(c.to_string().contains("avx_ne_convert"), "{c}");
        }
        let e = CpuBf16::decide(avx2(), lt, Some("maybe")).unwrap_err();
        assert!(e.contains("HOPPER_CPU_BF16=maybe"), "{e}");
    }

    #[test]
    fn libtorch_and_std_agree_on_this_cpu() {
        let torch = CpuFeatures::from_libtorch().expect("cpuinfo initialises here");
        let std = CpuFeatures::from_std();
        eprintln!("libtorch: {}; std: {}", torch.names(), std.names());
        assert_eq!(torch.avx512bw, std.avx512bw);
        assert_eq!(torch.avx512vl, std.avx512vl);
        assert_eq!(torch.avx512dq, std.avx512dq);
        #[cfg(target_arch = "x86_64")]
        assert!(torch.avx2);
    }
}
