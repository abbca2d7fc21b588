//! The embedding engine against sentence-transformers, and its batching and
//! error behaviour, on the real all-MiniLM-L6-v2 (`scripts/setup model`,
//! found through `HOPPER_MODEL_DIR`).
//!
//! The reference vectors in `fixtures/golden_minilm.json` were made by
//! `scripts/bench/golden` from `fixtures/golden_texts.json`.
//!
//! bf16 runs only on a CPU with native bf16; elsewhere its golden test says
//! it skips, and the refusal is tested instead. `HOPPER_CPU_BF16=0` takes
//! the second path on any CPU.

mod common;

use std::path::PathBuf;

use common::{Reference, cosine, fixture, minilm_dir as model_dir, two_thread_options};
use hopper_worker::embed::{
    BatchOptions, CpuBf16, EmbedError, LinearKernels, ModelRegistry, ModelSpec, Precision,
    PrecisionChoice, TextTokenizer,
};
use tch::Device;

fn golden() -> Reference {
    Reference::read(&fixture("golden_minilm.json"))
}

fn load(precision: Precision) -> ModelRegistry {
    load_with(precision, LinearKernels::Auto, None)
}

/// Two threads, split into `streams` (the engine's choice for `None`).
fn load_with(
    precision: Precision,
    kernels: LinearKernels,
    streams: Option<usize>,
) -> ModelRegistry {
    ModelRegistry::load_with(
        &[ModelSpec::from_dir(model_dir())],
        Device::Cpu,
        precision,
        &two_thread_options(kernels, streams),
    )
    .unwrap()
}

/// Embeds the golden texts; returns the minimum cosine to the reference.
async fn min_cosine(registry: ModelRegistry) -> f64 {
    let model = registry.get("all-MiniLM-L6-v2").unwrap();
    assert_eq!(model.dim(), 384);
    common::min_cosine(&model, &golden()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp32_matches_sentence_transformers() {
    // The default: oneDNN's packed GEMMs, two single-threaded streams.
    let registry = load_with(Precision::Fp32, LinearKernels::Auto, None);
    let model = registry.default_model();
    assert_eq!(model.kernels(), LinearKernels::OneDnn);
    assert_eq!(model.streams(), 2);
    let min = min_cosine(registry).await;
    assert!(min >= 0.9999, "fp32 min cosine {min}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp32_on_aten_kernels_matches_sentence_transformers() {
    let registry = load_with(Precision::Fp32, LinearKernels::Aten, Some(1));
    assert_eq!(registry.default_model().kernels(), LinearKernels::Aten);
    assert_eq!(registry.default_model().streams(), 1);
    let min = min_cosine(registry).await;
    assert!(min >= 0.9999, "fp32 (aten, one stream) min cosine {min}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf16_stays_close_to_sentence_transformers() {
    let cpu = CpuBf16::get().unwrap();
    if !cpu.native {
        eprintln!(
            "SKIPPED bf16_stays_close_to_sentence_transformers: this CPU has no native bf16 \
             ({}), so bf16 is refused here (bf16_is_refused_where_the_cpu_lacks_it checks that)",
            cpu.explained()
        );
        return;
    }
    let registry = load(Precision::Bf16);
    assert_eq!(registry.default_model().kernels(), LinearKernels::OneDnn);
    let min = min_cosine(registry).await;
    assert!(min >= 0.999, "bf16 min cosine {min}");
}

#[test]
fn bf16_is_refused_where_the_cpu_lacks_it() {
    let cpu = CpuBf16::get().unwrap();
    let (auto, _) = PrecisionChoice::Auto.resolve(Device::Cpu).unwrap();
    if cpu.native {
        eprintln!(
            "this CPU has native bf16 ({}): auto is bf16",
            cpu.explained()
        );
        assert_eq!(auto, Precision::Bf16);
        return;
    }
    assert_eq!(auto, Precision::Fp32, "auto avoids bf16 here");
    // Refused up front, whatever the kernels: a clear one-line reason, not
    // oneDNN's exception (with its stack trace) from packing the weights.
    for kernels in [
        LinearKernels::Auto,
        LinearKernels::OneDnn,
        LinearKernels::Aten,
    ] {
        let e = ModelRegistry::load_with(
            &[ModelSpec::from_dir(model_dir())],
            Device::Cpu,
            Precision::Bf16,
            &BatchOptions {
                kernels,
                ..BatchOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, EmbedError::NoNativeBf16(_)), "{kernels}: {e}");
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "one line: {msg}");
        assert!(
            msg.contains("no native bf16") && msg.contains("fp32"),
            "{msg}"
        );
    }
}

#[test]
fn tokens_match_the_reference_tokenizer() {
    let g = golden();
    let tok = TextTokenizer::load(&model_dir(), g.max_seq_length).unwrap();
    let got = tok.encode(&g.texts).unwrap();
    for (i, (t, want)) in got.iter().zip(&g.input_ids).enumerate() {
        assert_eq!(&t.ids, want, "text {i}: {:?}", g.texts[i]);
        assert_eq!(t.truncated, g.truncated[i], "text {i} truncated flag");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_forward_passes_and_get_their_own_vectors() {
    let registry = load(Precision::Fp32);
    let model = registry.resolve(None).unwrap();
    let calls: Vec<Vec<String>> = (0..50)
        .map(|i| {
            (0..1 + i % 3)
                .map(|j| format!("job {i} text {j}: {}", "word ".repeat((i * 7 + j * 5) % 40)))
                .collect()
        })
        .collect();
    // One call at a time: the reference (one forward pass each).
    let mut alone = Vec::new();
    for texts in &calls {
        alone.push(model.embed(texts.clone()).await.unwrap().vectors);
    }
    let before = model.stats();
    assert!(before.forward_passes >= 50, "{before:?}");

    let tasks: Vec<_> = calls
        .iter()
        .map(|texts| {
            let model = model.clone();
            let texts = texts.clone();
            tokio::spawn(async move { model.embed(texts).await })
        })
        .collect();
    let mut together = Vec::new();
    for t in tasks {
        together.push(t.await.unwrap().unwrap().vectors);
    }
    let after = model.stats();
    let passes = after.forward_passes - before.forward_passes;
    let texts: usize = calls.iter().map(Vec::len).sum();
    eprintln!("50 concurrent calls ({texts} texts): {passes} forward passes; {after:?}");
    assert!(passes < 50, "{passes} forward passes for 50 calls");
    assert_eq!(after.texts_embedded - before.texts_embedded, texts as u64);
    assert!(after.max_batch_size > 1);
    assert_eq!(after.queued_texts, 0);
    assert_eq!(model.available_capacity(), after.capacity as usize);
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.len(), b.len(), "call {i}");
        for (x, y) in a.iter().zip(b) {
            let c = cosine(x, y);
            assert!(c > 0.99999, "call {i}: cos {c} between batched and alone");
        }
        // Its own vectors: closer to its own than to any other call's.
        for (j, other) in alone.iter().enumerate() {
            if j != i && calls[j] != calls[i] {
                assert!(cosine(&b[0], &other[0]) < cosine(&b[0], &a[0]));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_large_calls() {
    let registry = load(Precision::Fp32);
    let model = registry.resolve(None).unwrap();
    let out = model.embed(Vec::new()).await.unwrap();
    assert!(out.vectors.is_empty() && out.truncated == 0);
    // More texts than one chunk: answered in order.
    let texts: Vec<String> = (0..600).map(|i| format!("sentence number {i}")).collect();
    let out = model.embed(texts.clone()).await.unwrap();
    assert_eq!(out.vectors.len(), 600);
    let single = model.embed(vec![texts[437].clone()]).await.unwrap();
    assert!(cosine(&out.vectors[437], &single.vectors[0]) > 0.99999);
}

#[test]
fn unknown_model_is_a_clear_error() {
    let registry = load(Precision::Fp32);
    let e = registry.get("nope").unwrap_err();
    assert!(e.is_unknown_model());
    let msg = e.to_string();
    assert!(
        msg.starts_with("unknown model nope (loaded: all-MiniLM-L6-v2@"),
        "{msg}"
    );
    let v = registry.versions()[0].clone();
    assert!(registry.get(&v).is_ok());
    assert!(registry.get("all-MiniLM-L6-v2@000000000000").is_err());
}

#[test]
fn missing_dir_and_missing_weights_are_clear_errors() {
    let e = ModelRegistry::load(&["/nonexistent/model".into()], Device::Cpu, Precision::Fp32)
        .unwrap_err();
    assert!(matches!(e, EmbedError::MissingDir(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/model"), "{e}");

    let dir = copy_model_configs("noweights");
    let e =
        ModelRegistry::load(std::slice::from_ref(&dir), Device::Cpu, Precision::Fp32).unwrap_err();
    assert!(
        matches!(e, EmbedError::MissingFile(ref p) if p.ends_with("model.safetensors")),
        "{e}"
    );
}

#[test]
fn corrupt_safetensors_is_a_clear_error() {
    let dir = copy_model_configs("corrupt");
    // Garbage.
    std::fs::write(
        dir.join("model.safetensors"),
        b"this is not a safetensors file",
    )
    .unwrap();
    let e =
        ModelRegistry::load(std::slice::from_ref(&dir), Device::Cpu, Precision::Fp32).unwrap_err();
    assert!(matches!(e, EmbedError::BadWeights { .. }), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    // A real file cut short.
    let real = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &real[..real.len() / 2]).unwrap();
    let e =
        ModelRegistry::load(std::slice::from_ref(&dir), Device::Cpu, Precision::Fp32).unwrap_err();
    assert!(matches!(e, EmbedError::BadWeights { .. }), "{e}");
    // fp16 on the CPU is refused up front.
    let e = ModelRegistry::load(&[model_dir()], Device::Cpu, Precision::Fp16).unwrap_err();
    assert!(matches!(e, EmbedError::UnsupportedPrecision { .. }), "{e}");
}

/// A temp dir with the model's config and tokenizer files but no weights.
fn copy_model_configs(tag: &str) -> PathBuf {
    let src = model_dir();
    let dir = std::env::temp_dir().join(format!("hopper-golden-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "sentence_bert_config.json",
        "modules.json",
        "tokenizer.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir
}
