//! The embedding engine on a second BERT of another size, served beside
//! all-MiniLM-L6-v2 (384-d, 6 layers) and checked against
//! sentence-transformers on the same files.
//!
//! The second model is made here, by `scripts/make-test-model` (random
//! weights, 768-d, 2 layers, 12 heads, MiniLM's tokenizer) into
//! `$HOPPER_CACHE/models/test-bert-768`: the first run takes seconds, later
//! ones find it up to date. Its `--reference` run embeds
//! `fixtures/golden_texts.json` with sentence-transformers in the pinned venv
//! (`scripts/setup st`) each time, from the files the engine then loads. One
//! registry serves both models, by the worker's `NAME=DIR` specs, and the
//! test embeds with both at once.
//!
//! bf16 runs only on a CPU with native bf16, as in `golden.rs`.

mod common;

use std::{
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{Reference, cosine, fixture, hopper_cache, minilm_dir, repo_root, two_thread_options};
use hopper_worker::embed::{CpuBf16, LinearKernels, ModelRegistry, ModelSpec, Precision};
use tch::Device;

const MINILM: &str = "minilm";
const BERT768: &str = "bert768";

/// The generated model and sentence-transformers' vectors of the golden
/// texts with it.
struct SecondModel {
    dir: PathBuf,
    reference: Reference,
}

/// Runs `scripts/make-test-model DIR [args]`; returns its stderr and time.
fn make_test_model(dir: &PathBuf, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new(repo_root().join("scripts/make-test-model"))
        .arg(dir)
        .args(args)
        .output()
        .expect("running scripts/make-test-model");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "scripts/make-test-model {args:?} failed ({}):\n{stderr}",
        out.status
    );
    eprintln!("scripts/make-test-model {args:?}: {elapsed:.1?}\n{stderr}");
    (stderr, elapsed)
}

/// Made once per test binary; the tests share it.
fn second_model() -> &'static SecondModel {
    static MODEL: OnceLock<SecondModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = hopper_cache().join("models/test-bert-768");
        let out =
            std::env::temp_dir().join(format!("hopper-second-model-{}.json", std::process::id()));
        let texts = fixture("golden_texts.json");
        make_test_model(
            &dir,
            &[
                "--reference",
                texts.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        let reference = Reference::read(&out);
        let _ = std::fs::remove_file(&out);
        SecondModel { dir, reference }
    })
}

/// MiniLM (the default) and the 768-d model, as `--model minilm=DIR,bert768=DIR`.
fn load_both(
    precision: Precision,
    kernels: LinearKernels,
    streams: Option<usize>,
) -> ModelRegistry {
    let specs: Vec<ModelSpec> = [
        format!("{MINILM}={}", minilm_dir().display()),
        format!("{BERT768}={}", second_model().dir.display()),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    ModelRegistry::load_with(
        &specs,
        Device::Cpu,
        precision,
        &two_thread_options(kernels, streams),
    )
    .unwrap()
}

/// Embeds the golden texts with both models at once; returns each one's
/// minimum cosine to its sentence-transformers reference (768-d, MiniLM).
async fn min_cosines(registry: &ModelRegistry) -> (f64, f64) {
    assert_eq!(registry.default_model().name(), MINILM);
    let bert = registry.get(BERT768).unwrap();
    let minilm = registry.get(MINILM).unwrap();
    assert_eq!((bert.dim(), minilm.dim()), (768, 384));
    let golden = Reference::read(&fixture("golden_minilm.json"));
    let reference = &second_model().reference;
    assert_eq!(reference.texts, golden.texts, "the same golden texts");
    tokio::join!(
        common::min_cosine(&bert, reference),
        common::min_cosine(&minilm, &golden)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp32_matches_sentence_transformers_beside_minilm() {
    let registry = load_both(Precision::Fp32, LinearKernels::Auto, None);
    assert_eq!(registry.default_model().kernels(), LinearKernels::OneDnn);
    let (bert, minilm) = min_cosines(&registry).await;
    assert!(bert >= 0.9999, "768-d fp32 min cosine {bert}");
    assert!(minilm >= 0.9999, "MiniLM fp32 min cosine {minilm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp32_on_aten_kernels_matches_sentence_transformers_beside_minilm() {
    let registry = load_both(Precision::Fp32, LinearKernels::Aten, Some(1));
    assert_eq!(registry.default_model().kernels(), LinearKernels::Aten);
    let (bert, minilm) = min_cosines(&registry).await;
    assert!(bert >= 0.9999, "768-d fp32 (aten) min cosine {bert}");
    assert!(minilm >= 0.9999, "MiniLM fp32 (aten) min cosine {minilm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf16_stays_close_to_sentence_transformers_beside_minilm() {
    let cpu = CpuBf16::get().unwrap();
    if !cpu.native {
        eprintln!(
            "SKIPPED bf16_stays_close_to_sentence_transformers_beside_minilm: this CPU has no \
             native bf16 ({}); golden.rs checks that bf16 is refused here",
            cpu.explained()
        );
        return;
    }
    let registry = load_both(Precision::Bf16, LinearKernels::Auto, None);
    let (bert, minilm) = min_cosines(&registry).await;
    assert!(bert >= 0.999, "768-d bf16 min cosine {bert}");
    assert!(minilm >= 0.999, "MiniLM bf16 min cosine {minilm}");
}

/// The random model is a test only if different texts get clearly
/// different vectors; its references must tell every two texts apart.
#[test]
fn the_random_model_tells_texts_apart() {
    let r = &second_model().reference;
    assert_eq!(r.dim, 768);
    let mut max = f64::MIN;
    let mut sum = 0.0;
    let mut pairs = 0;
    for i in 0..r.texts.len() {
        for j in i + 1..r.texts.len() {
            if r.input_ids[i] == r.input_ids[j] {
                continue; // the two long texts share their first 256 tokens
            }
            let c = cosine(&r.embeddings[i], &r.embeddings[j]);
            max = max.max(c);
            sum += c;
            pairs += 1;
        }
    }
    let mean = sum / pairs as f64;
    eprintln!("{pairs} pairs of different texts: cosine max {max:.4}, mean {mean:.4}");
    assert!(max < 0.95, "two different texts at cosine {max}");
    assert!(mean < 0.7, "different texts at mean cosine {mean}");
}

/// What other tests rely on when they call the script themselves: the same
/// arguments find the model up to date, at once, with the same weights.
#[test]
fn a_second_run_finds_the_model_up_to_date() {
    let model = second_model();
    let (stderr, elapsed) = make_test_model(&model.dir, &[]);
    assert!(stderr.contains("up to date"), "{stderr}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let version =
        hopper_worker::embed::registry::weights_version(&model.dir.join("model.safetensors"))
            .unwrap();
    assert_eq!(version, model.reference.model_sha256[..12]);
}

/// A model directory as sentence-transformers 6's own `save` writes it
/// (`--layout st6`): the pooling mode as one string (CLS here), and the
/// length (128 tokens) only as the tokenizer's `model_max_length`. The
/// engine reads both, so it matches sentence-transformers on the golden
/// texts, the long ones truncated at 128 tokens as there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_saved_by_sentence_transformers_6_matches_it() {
    let dir = hopper_cache().join("models/test-bert-256-st6");
    let out = std::env::temp_dir().join(format!("hopper-st6-model-{}.json", std::process::id()));
    let texts = fixture("golden_texts.json");
    make_test_model(
        &dir,
        &[
            "--hidden",
            "256",
            "--heads",
            "4",
            "--intermediate",
            "512",
            "--max-seq-length",
            "128",
            "--pooling",
            "cls",
            "--layout",
            "st6",
            "--reference",
            texts.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let reference = Reference::read(&out);
    let _ = std::fs::remove_file(&out);
    let pooling = std::fs::read_to_string(dir.join("1_Pooling/config.json")).unwrap();
    assert!(pooling.contains(r#""pooling_mode": "cls""#), "{pooling}");
    let sbert = std::fs::read_to_string(dir.join("sentence_bert_config.json")).unwrap();
    assert!(!sbert.contains("max_seq_length"), "{sbert}");
    assert_eq!(reference.max_seq_length, 128);
    assert!(
        reference.truncated.iter().any(|t| *t),
        "a golden text longer than 128 tokens"
    );
    let spec: ModelSpec = format!("st6={}", dir.display()).parse().unwrap();
    let registry = ModelRegistry::load_with(
        &[spec],
        Device::Cpu,
        Precision::Fp32,
        &two_thread_options(LinearKernels::Auto, None),
    )
    .unwrap();
    let model = registry.get("st6").unwrap();
    let min = common::min_cosine(&model, &reference).await;
    assert!(min >= 0.9999, "st6-layout fp32 min cosine {min}");
}
