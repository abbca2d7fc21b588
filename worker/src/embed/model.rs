//! A BERT-family sentence encoder on tch (libtorch).
//!
//! embeddings (word + position + token type, LayerNorm) → N encoder layers
//! (fused QKV projection, `scaled_dot_product_attention` with the padding
//! mask, output projection + residual + LayerNorm, GELU feed-forward +
//! residual + LayerNorm) → pooling (masked mean, CLS, max or mean-sqrt-len,
//! in fp32) → optional L2 normalisation. Sizes all come from the
//! [`ModelConfig`]; weights from `model.safetensors`, with or without a
//! `bert.` prefix. Everything runs without autograd; weights and
//! activations use the chosen [`Precision`]. On CPU the linear layers run
//! oneDNN's GEMMs on weights packed at load time, GELU fused
//! ([`LinearKernels`], [`super::onednn`]); elsewhere ATen's `linear`.

use std::{collections::HashMap, fmt, path::PathBuf, str::FromStr};

use tch::{Device, Kind, TchError, Tensor};

use super::{
    EmbedError,
    config::{Activation, ModelConfig, Pooling},
    cpu::CpuBf16,
    onednn::{self, PostOp},
    tokenize::Tokens,
};

/// Number format of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats: the reference; on a CPU without native bf16, the
    /// choice of [`PrecisionChoice::Auto`].
    Fp32,
    /// bfloat16: ≈1.7× fp32's throughput on a CPU with native bf16 (see
    /// [`super::cpu`]), refused on one without (5× slower there); CUDA too.
    Bf16,
    /// float16: CUDA only.
    Fp16,
}

impl Precision {
    /// The torch kind of this precision.
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::Fp16 => Kind::Half,
        }
    }

    /// Short name: `fp32`, `bf16`, `fp16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }

    /// Fails when this precision cannot run on `device`, or would run far
    /// slower than fp32 there: fp16 on a CPU, bf16 on a CPU without native
    /// bf16 ([`CpuBf16`]).
    pub fn check(self, device: Device) -> Result<(), EmbedError> {
        match (self, device) {
            (Precision::Fp16, Device::Cpu) => Err(EmbedError::UnsupportedPrecision {
                precision: "fp16".into(),
                device: "the CPU (use fp32, bf16 or auto)".into(),
            }),
            (Precision::Bf16, Device::Cpu) => {
                let cpu = CpuBf16::get()?;
                if cpu.native {
                    Ok(())
                } else {
                    Err(EmbedError::NoNativeBf16(cpu.explained()))
                }
            }
            _ => Ok(()),
        }
    }
}

/// What `--precision` asks for: one [`Precision`], or the device's best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionChoice {
    /// fp16 on CUDA; on a CPU bf16 where it is native ([`CpuBf16`]), else
    /// fp32.
    #[default]
    Auto,
    /// Exactly this precision (refused where [`Precision::check`] fails).
    Exactly(Precision),
}

impl PrecisionChoice {
    /// The precision for `device`, and why, in a few words.
    pub fn resolve(self, device: Device) -> Result<(Precision, String), EmbedError> {
        let (precision, why) = match (self, device) {
            (PrecisionChoice::Exactly(p), _) => (p, format!("{p} asked for")),
            (PrecisionChoice::Auto, Device::Cpu) => {
                let cpu = CpuBf16::get()?;
                let p = if cpu.native {
                    Precision::Bf16
                } else {
                    Precision::Fp32
                };
                (p, format!("auto on a CPU with {cpu}"))
            }
            (PrecisionChoice::Auto, _) => (Precision::Fp16, "auto on CUDA".into()),
        };
        precision.check(device)?;
        Ok((precision, why))
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrecisionChoice::Auto => f.write_str("auto"),
            PrecisionChoice::Exactly(p) => p.fmt(f),
        }
    }
}

impl FromStr for PrecisionChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(PrecisionChoice::Auto);
        }
        s.parse()
            .map(PrecisionChoice::Exactly)
            .map_err(|_| format!("`{s}` is not auto, fp32, bf16 or fp16"))
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            _ => Err(format!("`{s}` is not fp32, bf16 or fp16")),
        }
    }
}

/// Which GEMM kernels the encoder's linear layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearKernels {
    /// oneDNN with packed weights where available (CPU), else ATen.
    #[default]
    Auto,
    /// ATen's `linear` (an MKL sgemm for fp32 on CPU; cuBLAS on CUDA).
    Aten,
    /// oneDNN with packed weights ([`super::onednn`]); CPU only.
    OneDnn,
}

impl LinearKernels {
    /// Short name: `auto`, `aten`, `onednn`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinearKernels::Auto => "auto",
            LinearKernels::Aten => "aten",
            LinearKernels::OneDnn => "onednn",
        }
    }

    /// What this choice comes to on `device`: `Aten` or `OneDnn`.
    pub fn resolve(self, device: Device) -> Result<LinearKernels, EmbedError> {
        Ok(if self.packs(device)? {
            LinearKernels::OneDnn
        } else {
            LinearKernels::Aten
        })
    }

    /// Whether the layers of a model on `device` are packed for oneDNN.
    fn packs(self, device: Device) -> Result<bool, EmbedError> {
        let cpu = device == Device::Cpu;
        match self {
            LinearKernels::Aten => Ok(false),
            LinearKernels::Auto => Ok(cpu && onednn::available()),
            LinearKernels::OneDnn if cpu && onednn::available() => Ok(true),
            LinearKernels::OneDnn => Err(EmbedError::BadOptions(format!(
                "oneDNN linear kernels need the CPU and a libtorch built with oneDNN \
                 (device {device:?}, available: {})",
                onednn::available()
            ))),
        }
    }
}

impl fmt::Display for LinearKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinearKernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(LinearKernels::Auto),
            "aten" => Ok(LinearKernels::Aten),
            "onednn" | "mkldnn" => Ok(LinearKernels::OneDnn),
            _ => Err(format!("`{s}` is not auto, aten or onednn")),
        }
    }
}

/// A weight matrix as ATen stores it, or packed for oneDNN.
enum Weight {
    Dense(Tensor),
    Packed(Tensor),
}

struct Linear {
    w: Weight,
    b: Tensor,
}

impl Linear {
    /// Packs the weight for oneDNN when `pack`.
    fn new(w: Tensor, b: Tensor, pack: bool) -> Result<Self, TchError> {
        let w = if pack {
            Weight::Packed(onednn::pack_weight(&w)?)
        } else {
            Weight::Dense(w)
        };
        Ok(Self { w, b })
    }

    /// `post(x · Wᵀ + b)` over the last dimension of `x`.
    fn forward(&self, x: &Tensor, post: PostOp) -> Result<Tensor, TchError> {
        match &self.w {
            Weight::Dense(w) => {
                let y = x.f_linear(w, Some(&self.b))?;
                match post {
                    PostOp::None => Ok(y),
                    PostOp::Gelu => y.f_gelu("none"),
                    PostOp::GeluTanh => y.f_gelu("tanh"),
                    PostOp::Relu => y.f_relu(),
                }
            }
            Weight::Packed(w) => {
                let mut shape = x.size();
                let inner = shape.pop().unwrap_or(1);
                let y = onednn::linear(&x.f_reshape([-1, inner])?, w, &self.b, post)?;
                shape.push(y.size().last().copied().unwrap_or(0));
                y.f_view(shape.as_slice())
            }
        }
    }
}

struct Norm {
    w: Tensor,
    b: Tensor,
}

struct Layer {
    /// Query, key and value projections in one GEMM.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: Norm,
}

/// A loaded encoder on one device, in one precision.
pub struct Encoder {
    cfg: ModelConfig,
    device: Device,
    precision: Precision,
    kernels: LinearKernels,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

/// Reads the named tensors of `model.safetensors`, prefix-free and checked.
struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    device: Device,
}

impl Weights {
    fn read(path: PathBuf, device: Device) -> Result<Self, EmbedError> {
        if !path.is_file() {
            return Err(EmbedError::MissingFile(path));
        }
        let named = Tensor::read_safetensors(&path).map_err(|e| EmbedError::BadWeights {
            path: path.clone(),
            reason: match e {
                TchError::SafeTensorError { err, .. } => err.to_string(),
                e => e.to_string(),
            },
        })?;
        let tensors = named
            .into_iter()
            .map(|(k, t)| {
                let k = k.strip_prefix("bert.").map(str::to_string).unwrap_or(k);
                (k, t)
            })
            .collect();
        Ok(Self {
            path,
            tensors,
            device,
        })
    }

    /// Takes tensor `name` (or its legacy alias), checks its shape and
    /// converts it to `kind` on the device.
    fn take(&mut self, name: &str, shape: &[i64], kind: Kind) -> Result<Tensor, EmbedError> {
        let legacy = name
            .strip_suffix(".weight")
            .filter(|s| s.ends_with("LayerNorm"))
            .map(|s| format!("{s}.gamma"))
            .or_else(|| {
                name.strip_suffix(".bias")
                    .filter(|s| s.ends_with("LayerNorm"))
                    .map(|s| format!("{s}.beta"))
            });
        let t = match self.tensors.remove(name) {
            Some(t) => t,
            None => legacy
                .and_then(|l| self.tensors.remove(&l))
                .ok_or_else(|| EmbedError::BadWeights {
                    path: self.path.clone(),
                    reason: format!("tensor `{name}` is missing"),
                })?,
        };
        if t.size() != shape {
            return Err(EmbedError::BadWeights {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{name}` has shape {:?}, the config implies {shape:?}",
                    t.size()
                ),
            });
        }
        if !t.is_floating_point() {
            return Err(EmbedError::BadWeights {
                path: self.path.clone(),
                reason: format!("tensor `{name}` is {:?}, not floating point", t.kind()),
            });
        }
        Ok(t.f_to_kind(kind)?.f_to_device(self.device)?)
    }

    /// The `[out, in]` weight and `[out]` bias of `prefix`.
    fn linear(
        &mut self,
        prefix: &str,
        out: i64,
        inp: i64,
        kind: Kind,
    ) -> Result<(Tensor, Tensor), EmbedError> {
        Ok((
            self.take(&format!("{prefix}.weight"), &[out, inp], kind)?,
            self.take(&format!("{prefix}.bias"), &[out], kind)?,
        ))
    }

    fn norm(&mut self, prefix: &str, h: i64, kind: Kind) -> Result<Norm, EmbedError> {
        Ok(Norm {
            w: self.take(&format!("{prefix}.weight"), &[h], kind)?,
            b: self.take(&format!("{prefix}.bias"), &[h], kind)?,
        })
    }
}

impl Encoder {
    /// Loads `model.safetensors` of `cfg.dir` onto `device` in `precision`,
    /// with the best linear kernels for the device.
    pub fn load(
        cfg: &ModelConfig,
        device: Device,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        Self::load_with(cfg, device, precision, LinearKernels::Auto)
    }

    /// [`Self::load`] with the linear layers' kernels chosen.
    pub fn load_with(
        cfg: &ModelConfig,
        device: Device,
        precision: Precision,
        kernels: LinearKernels,
    ) -> Result<Self, EmbedError> {
        precision.check(device)?;
        let kernels = kernels.resolve(device)?;
        let pack = kernels == LinearKernels::OneDnn;
        let kind = precision.kind();
        let h = cfg.hidden_size;
        let mut w = Weights::read(cfg.dir.join("model.safetensors"), device)?;
        let word = w.take(
            "embeddings.word_embeddings.weight",
            &[cfg.vocab_size, h],
            kind,
        )?;
        let position = w.take(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
            kind,
        )?;
        let token_type = w.take(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
            kind,
        )?;
        // The embedding sum and its LayerNorm run in fp32 (cheap, and it
        // keeps bf16 closer to the reference).
        let emb_norm = w.norm("embeddings.LayerNorm", h, Kind::Float)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let (qw, qb) = w.linear(&format!("{p}.attention.self.query"), h, h, kind)?;
            let (kw, kb) = w.linear(&format!("{p}.attention.self.key"), h, h, kind)?;
            let (vw, vb) = w.linear(&format!("{p}.attention.self.value"), h, h, kind)?;
            let qkv = Linear::new(
                Tensor::f_cat(&[&qw, &kw, &vw], 0)?,
                Tensor::f_cat(&[&qb, &kb, &vb], 0)?,
                pack,
            )?;
            let (ow, ob) = w.linear(&format!("{p}.attention.output.dense"), h, h, kind)?;
            let (iw, ib) = w.linear(
                &format!("{p}.intermediate.dense"),
                cfg.intermediate_size,
                h,
                kind,
            )?;
            let (fw, fb) =
                w.linear(&format!("{p}.output.dense"), h, cfg.intermediate_size, kind)?;
            layers.push(Layer {
                qkv,
                attn_out: Linear::new(ow, ob, pack)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, kind)?,
                ffn_in: Linear::new(iw, ib, pack)?,
                ffn_out: Linear::new(fw, fb, pack)?,
                ffn_norm: w.norm(&format!("{p}.output.LayerNorm"), h, kind)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            device,
            precision,
            kernels,
            word,
            position,
            token_type,
            emb_norm,
            layers,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Output vector width.
    pub fn dim(&self) -> usize {
        self.cfg.hidden_size as usize
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The precision of weights and activations.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The linear layers' kernels: `Aten` or `OneDnn` (never `Auto`).
    pub fn kernels(&self) -> LinearKernels {
        self.kernels
    }

    /// Embeds one batch of tokenised texts, padded here to the longest:
    /// one forward pass. Returns one vector per text, in order.
    pub fn embed(&self, batch: &[&Tokens]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let b = batch.len();
        let l = batch.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.cfg.pad_token_id; b * l];
        let mut types = vec![0i64; b * l];
        let mut mask = vec![false; b * l];
        for (row, t) in batch.iter().enumerate() {
            let at = row * l;
            ids[at..at + t.len()].copy_from_slice(&t.ids);
            types[at..at + t.len()].copy_from_slice(&t.type_ids);
            mask[at..at + t.len()].fill(true);
        }
        let shape = [b as i64, l as i64];
        let ids = Tensor::from_slice(&ids)
            .f_view(shape)?
            .f_to_device(self.device)?;
        let types = Tensor::from_slice(&types)
            .f_view(shape)?
            .f_to_device(self.device)?;
        let mask = Tensor::from_slice(&mask)
            .f_view(shape)?
            .f_to_device(self.device)?;
        let padded = batch.iter().any(|t| t.len() < l);
        let out = tch::no_grad(|| self.forward_inner(&ids, &types, &mask, padded))?;
        let out = out.f_to_device(Device::Cpu)?.f_contiguous()?;
        let dim = self.dim();
        let mut flat = vec![0f32; b * dim];
        out.f_copy_data(&mut flat, b * dim)?;
        Ok(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect())
    }

    /// The forward pass: `ids`, `types` `[B, L]` int64, `mask` `[B, L]`
    /// bool (true for real tokens) → `[B, H]` fp32 sentence vectors.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let padded = mask.f_all()?.f_int64_value(&[])? == 0;
        self.forward_inner(ids, types, mask, padded)
    }

    /// [`Self::forward`], told whether any row is padded.
    fn forward_inner(
        &self,
        ids: &Tensor,
        types: &Tensor,
        mask: &Tensor,
        padded: bool,
    ) -> Result<Tensor, TchError> {
        let (b, l) = ids.size2()?;
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let hd = self.cfg.head_dim();
        let eps = self.cfg.layer_norm_eps;
        let kind = self.precision.kind();

        let x = Tensor::f_embedding(&self.word, ids, -1, false, false)?
            .f_to_kind(Kind::Float)?
            .f_add(&self.position.f_narrow(0, 0, l)?.f_to_kind(Kind::Float)?)?
            .f_add(
                &Tensor::f_embedding(&self.token_type, types, -1, false, false)?
                    .f_to_kind(Kind::Float)?,
            )?;
        let mut x = x
            .f_layer_norm(
                [h],
                Some(&self.emb_norm.w),
                Some(&self.emb_norm.b),
                eps,
                true,
            )?
            .f_to_kind(kind)?;
        // [B, 1, 1, L]: every query may attend to the real tokens only. A
        // batch without padding (common once texts are sorted by length)
        // needs no mask, and attention runs faster without one.
        let attn_mask = if padded {
            Some(mask.f_view([b, 1, 1, l])?)
        } else {
            None
        };
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x, PostOp::None)?
                .f_view([b, l, 3, heads, hd])?
                .f_permute([2, 0, 3, 1, 4])?;
            let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
            let ctx = Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                attn_mask.as_ref(),
                0.0,
                false,
                None,
                false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([b, l, h])?;
            let a = layer.attn_out.forward(&ctx, PostOp::None)?.f_add_(&x)?;
            x = a.f_layer_norm(
                [h],
                Some(&layer.attn_norm.w),
                Some(&layer.attn_norm.b),
                eps,
                true,
            )?;
            let act = match self.cfg.hidden_act {
                Activation::Gelu => PostOp::Gelu,
                Activation::GeluTanh => PostOp::GeluTanh,
                Activation::Relu => PostOp::Relu,
            };
            let f = layer.ffn_in.forward(&x, act)?;
            let f = layer.ffn_out.forward(&f, PostOp::None)?.f_add_(&x)?;
            x = f.f_layer_norm(
                [h],
                Some(&layer.ffn_norm.w),
                Some(&layer.ffn_norm.b),
                eps,
                true,
            )?;
        }
        self.pool(&x.f_to_kind(Kind::Float)?, mask)
    }

    /// Pools `[B, L, H]` fp32 states into `[B, H]`, normalised if configured.
    fn pool(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let m = mask.f_unsqueeze(-1)?.f_to_kind(Kind::Float)?;
        let count = || -> Result<Tensor, TchError> {
            m.f_sum_dim_intlist(1, false, Kind::Float)?
                .f_clamp_min(1e-9)
        };
        let summed = || x.f_mul(&m)?.f_sum_dim_intlist(1, false, Kind::Float);
        let pooled = match self.cfg.pooling {
            Pooling::Mean => summed()?.f_div(&count()?)?,
            Pooling::MeanSqrtLen => summed()?.f_div(&count()?.f_sqrt()?)?,
            Pooling::Cls => x.f_select(1, 0)?,
            Pooling::Max => x.f_masked_fill(&m.f_eq(0.0)?, -1e9)?.f_amax(1, false)?,
        };
        if !self.cfg.normalize {
            return Ok(pooled);
        }
        let norm = pooled
            .f_square()?
            .f_sum_dim_intlist(1, true, Kind::Float)?
            .f_sqrt()?
            .f_clamp_min(1e-12)?;
        pooled.f_div(&norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_parse() {
        for k in [
            LinearKernels::Auto,
            LinearKernels::Aten,
            LinearKernels::OneDnn,
        ] {
            assert_eq!(k.as_str().parse::<LinearKernels>(), Ok(k));
        }
        assert_eq!("mkldnn".parse::<LinearKernels>(), Ok(LinearKernels::OneDnn));
        assert!("mkl".parse::<LinearKernels>().is_err());
    }

    #[test]
    fn precision_choices_parse() {
        assert_eq!("auto".parse(), Ok(PrecisionChoice::Auto));
        assert_eq!(
            "BF16".parse(),
            Ok(PrecisionChoice::Exactly(Precision::Bf16))
        );
        assert_eq!(PrecisionChoice::default(), PrecisionChoice::Auto);
        let e = "int8".parse::<PrecisionChoice>().unwrap_err();
        assert!(e.contains("auto, fp32, bf16 or fp16"), "{e}");
        assert!(
            PrecisionChoice::Exactly(Precision::Fp16)
                .resolve(Device::Cpu)
                .is_err()
        );
    }

    #[test]
    fn onednn_kernels_are_for_the_cpu() {
        assert!(LinearKernels::Aten.packs(Device::Cpu).is_ok_and(|p| !p));
        assert!(LinearKernels::Auto.packs(Device::Cuda(0)).is_ok_and(|p| !p));
        assert!(LinearKernels::OneDnn.packs(Device::Cuda(0)).is_err());
        assert_eq!(
            LinearKernels::OneDnn.packs(Device::Cpu).is_ok(),
            onednn::available()
        );
    }
}
