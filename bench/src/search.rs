//! `hopper-bench search`: vector search measured at a given number of
//! chunks (`scripts/bench/search`).
//!
//! One run loads `--chunks` chunks into one document set of the bench's own
//! schema and measures, in order:
//!
//! 1. **vectors**: either the real model's, each chunk's text embedded by
//!    `embed` jobs submitted through the API (`texts` in batches; results
//!    come back through `vectors_url`), or random unit vectors around 1,000
//!    random centroids ("random clustered": the only affordable way to 1M
//!    vectors on a CPU);
//! 2. **load**: documents, chunks and `chunk_vectors` written by binary COPY
//!    with the model's HNSW index dropped (and keyword search's GIN index,
//!    which is not measured here);
//! 3. **index build**: the model's partial HNSW index created again, as
//!    `hopper_shared::models::register` names it, and timed;
//! 4. **recall@10** per `hnsw.ef_search`: the top 10 of the API's own
//!    search function (`documents::search`, on a connection of the API's
//!    settings) against the exact top 10 of a sequential scan, with the
//!    latency of that call alone (and a check that it used the index);
//! 5. **end to end**: `POST /v1/search` from 1 and 16 concurrent clients,
//!    each query text seen once (the query is embedded), then a set of
//!    queries asked again (the worker's embedding cache answers); the API's
//!    own `embed_ms`/`took_ms` split each request's time.
//!
//! It prints progress to stderr and one JSON object on its last line.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use deadpool_postgres::Pool;
use futures::{StreamExt, pin_mut, stream};
use hopper_shared::{
    Config, db, documents,
    documents::SearchScope,
    metrics as m,
    models::{self, EmbeddingModel, REGISTER_LOCK, ServedModel},
};
use pgvector::Vector;
use serde_json::{Value, json};
use tokio_postgres::{
    binary_copy::BinaryCopyInWriter,
    types::{Kind, ToSql, Type},
};
use uuid::Uuid;

/// The tenant of open mode, whose documents the API searches.
const TENANT: &str = "default";
/// Chunks per generated document.
const CHUNKS_PER_DOCUMENT: usize = 100;
/// Centroids of the random clustered vectors.
const CENTROIDS: usize = 1_000;
/// Per-dimension noise around a centroid: a vector's cosine to its centroid
/// is about 0.8 at 384 dimensions, two of one cluster about 0.6.
const CLUSTER_NOISE: f64 = 0.04;
/// Hits a search asks for.
const K: i64 = 10;

/// Where the chunks' vectors come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VectorSource {
    /// The worker's model, through `embed` jobs.
    Model,
    /// Random unit vectors around 1,000 random centroids.
    Clustered,
}

/// What one run measures.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// The API's base URL.
    #[arg(long)]
    pub api: String,
    /// Chunks to load.
    #[arg(long, default_value_t = 100_000)]
    pub chunks: usize,
    /// Where the chunks' vectors come from.
    #[arg(long, value_enum, default_value_t = VectorSource::Model)]
    pub vectors: VectorSource,
    /// The document set to load into.
    #[arg(long, default_value = "bench-search")]
    pub set: String,
    /// Texts per `embed` job while embedding the corpus.
    #[arg(long, default_value_t = 512)]
    pub embed_batch: usize,
    /// `embed` jobs in flight while embedding the corpus.
    #[arg(long, default_value_t = 4)]
    pub embed_in_flight: usize,
    /// The HNSW index's `m` values (pgvector's default: 16): the index is
    /// built, and recall measured, once per value, in order; the end-to-end
    /// runs search the last one.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub m: Vec<u32>,
    /// The HNSW index's `ef_construction` (pgvector's default: 64).
    #[arg(long, default_value_t = 64)]
    pub ef_construction: u32,
    /// Queries compared against exact search.
    #[arg(long, default_value_t = 200)]
    pub recall_queries: usize,
    /// `hnsw.ef_search` values to measure recall and SQL latency at.
    #[arg(long, value_delimiter = ',', default_value = "40,64,100,200")]
    pub ef_search: Vec<i64>,
    /// Distinct queries per end-to-end run.
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    /// Concurrent clients of the end-to-end runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub clients: Vec<usize>,
    /// Distinct texts of the repeated-query run (each asked several times).
    #[arg(long, default_value_t = 50)]
    pub repeated_texts: usize,
    /// Give up the index build after this many seconds (reporting how far
    /// it got and an estimate of the whole).
    #[arg(long, default_value_t = 1_200)]
    pub build_timeout_s: u64,
    /// Skip the end-to-end runs (load, build and recall only).
    #[arg(long)]
    pub no_http: bool,
    /// The worker's `/metrics` URL: each end-to-end run then reports the
    /// engine's forward passes, texts per pass and time per pass.
    #[arg(long)]
    pub worker_metrics: Option<String>,
}

/// Runs one measurement; the JSON object of its results.
pub async fn run(config: &Config, args: &SearchArgs) -> anyhow::Result<Value> {
    let pool = db::pool(config, 4)?;
    db::migrate(&pool, &config.db_schema).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let corpus = Corpus::new(0x5EED_0001);

    // 1. Vectors (and the model they belong to).
    let started = Instant::now();
    let (model, vectors, embed) = match args.vectors {
        VectorSource::Model => {
            say(format!(
                "embedding {} chunk texts through the API ({} per job, {} jobs in flight)",
                args.chunks, args.embed_batch, args.embed_in_flight
            ));
            let texts = (0..args.chunks).map(|i| corpus.chunk(i)).collect();
            let out = embed_via_api(
                &http,
                &args.api,
                texts,
                args.embed_batch,
                args.embed_in_flight,
            )
            .await?;
            let secs = started.elapsed().as_secs_f64();
            say(format!(
                "  {} vectors in {secs:.1} s ({:.0} texts/s)",
                out.vectors.len(),
                out.vectors.len() as f64 / secs
            ));
            let embed = json!({ "embed_s": round(secs, 1), "embed_texts_per_s": round(out.vectors.len() as f64 / secs, 0) });
            (out.model, Some(out.vectors), embed)
        }
        VectorSource::Clustered => {
            // The set still needs the worker's model: the API embeds the
            // end-to-end queries with it.
            let out = embed_via_api(&http, &args.api, vec!["warm up".into()], 1, 1).await?;
            (out.model, None, json!({}))
        }
    };
    let model = register(&pool, &model).await?;
    say(format!(
        "model {} (id {}, {}-d)",
        model.model, model.id, model.dim
    ));
    let clusters = Clusters::new(0xC1u64 << 32, model.dim as usize);
    // The recall queries, embedded once for every `m` (before the
    // registration lock below: the worker may want it meanwhile).
    let recall_texts: Vec<String> = (0..args.recall_queries)
        .map(|i| corpus.query(1_000_000 + i))
        .collect();
    let queries: Vec<Vec<f32>> = match args.vectors {
        VectorSource::Model => {
            embed_via_api(&http, &args.api, recall_texts, args.embed_batch, 1)
                .await?
                .vectors
        }
        VectorSource::Clustered => (0..args.recall_queries)
            .map(|i| clusters.vector(&mut Rng::new(0xA11CE + i as u64)))
            .collect(),
    };

    // 2. Load, without the index (nor keyword search's GIN index, which
    // nothing here reads and which would slow a 1M load by minutes). A
    // worker renews its models every minute
    // and creates a missing index as it does; the registration lock, held
    // from the drop to the build, keeps it from building this one first.
    let mut conn = connect(config).await?;
    let index = index_name(&model);
    conn.batch_execute(&format!(
        "SET statement_timeout = 0; \
         SELECT pg_advisory_lock({REGISTER_LOCK}); \
         TRUNCATE documents, document_sets CASCADE; \
         DROP INDEX IF EXISTS {index}; DROP INDEX IF EXISTS chunks_tsv"
    ))
    .await?;
    let started = Instant::now();
    load(
        &mut conn,
        args,
        &model,
        &corpus,
        vectors.as_deref(),
        &clusters,
    )
    .await?;
    let load_s = started.elapsed().as_secs_f64();
    say(format!("loaded {} chunks in {load_s:.1} s", args.chunks));
    conn.batch_execute("ANALYZE documents; ANALYZE chunks; ANALYZE chunk_vectors")
        .await?;

    // 3. Per `m`: the index build, then recall and SQL latency per
    // ef_search.
    let mut out = json!({
        "chunks": args.chunks,
        "documents": args.chunks.div_ceil(CHUNKS_PER_DOCUMENT),
        "vectors": match args.vectors {
            VectorSource::Model => "model",
            VectorSource::Clustered => "random clustered",
        },
        "model": model.model,
        "dim": model.dim,
        "embed": embed,
        "load_s": round(load_s, 1),
    });
    let mut sweep = Vec::with_capacity(args.m.len());
    for (i, &m) in args.m.iter().enumerate() {
        if i > 0 {
            // The registration lock again, from the drop to the build (as
            // before the load): the worker must not build its own.
            conn.batch_execute(&format!(
                "SELECT pg_advisory_lock({REGISTER_LOCK}); DROP INDEX IF EXISTS {index}"
            ))
            .await?;
        }
        let build = build_index(config, &conn, &model, args, m).await?;
        conn.batch_execute(&format!(
            "SELECT pg_advisory_unlock({REGISTER_LOCK}); ANALYZE chunk_vectors"
        ))
        .await?;
        if build["complete"] != json!(true) {
            say("the index build did not finish: no recall or search to measure");
            out["build"] = build;
            return Ok(out);
        }
        let recall = recall(
            config,
            &mut conn,
            &model,
            &args.set,
            &queries,
            &args.ef_search,
        )
        .await?;
        sweep.push(json!({ "m": m, "build": build, "recall": recall }));
    }
    // The headline figures: the last `m`, the index the end-to-end runs use.
    let last = sweep.last().cloned().unwrap_or_default();
    out["build"] = last["build"].clone();
    out["recall"] = last["recall"].clone();
    out["m_sweep"] = json!(sweep);

    // 4. End to end.
    if !args.no_http {
        out["e2e"] = end_to_end(&http, args, &corpus).await?;
    }
    Ok(out)
}

fn say(line: impl AsRef<str>) {
    eprintln!("[search] {}", line.as_ref());
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// The `p`-quantile of sorted `xs` (nearest rank).
fn pct(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[((xs.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(xs.len() - 1)]
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "p50_ms": round(pct(&ms, 0.50), 2),
        "p90_ms": round(pct(&ms, 0.90), 2),
        "p99_ms": round(pct(&ms, 0.99), 2),
        "max_ms": round(pct(&ms, 1.0), 2),
    })
}

/// A connection of its own (not the pool's): session settings stay put.
async fn connect(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&config.database_url, tokio_postgres::NoTls)
        .await
        .context("cannot reach Postgres")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            say(format!("postgres connection: {e}"));
        }
    });
    client
        .batch_execute(&format!(
            "SET search_path = {}, public; SET client_min_messages = warning",
            config.db_schema
        ))
        .await?;
    Ok(client)
}

/// Registers the worker's model `name@version` (as a worker does at
/// start), with its dimension.
async fn register(pool: &Pool, served: &ServedModel) -> anyhow::Result<EmbeddingModel> {
    Ok(models::register(pool, std::slice::from_ref(served))
        .await?
        .remove(0))
}

/// The model's partial HNSW index, as `models::register` names it.
fn index_name(model: &EmbeddingModel) -> String {
    format!("chunk_vectors_m{}_hnsw", model.id)
}

// ---------------------------------------------------------------------------
// The corpus: topical synthetic text, so queries have real neighbours.
// ---------------------------------------------------------------------------

/// A splitmix64 stream: deterministic, so every run loads the same corpus.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// One topic's words: nouns, verbs (third person) and adjectives.
struct Topic {
    nouns: Vec<&'static str>,
    verbs: Vec<&'static str>,
    adjectives: Vec<&'static str>,
}

const TOPICS: &[(&str, &str, &str)] = &[
    (
        "glacier moraine icefield crevasse meltwater snowpack permafrost fjord iceberg tundra avalanche firn",
        "erodes carves freezes thaws retreats advances",
        "frozen polar alpine subglacial thawing seasonal",
    ),
    (
        "compiler parser bytecode register allocator linker optimizer lexer interpreter runtime garbage-collector debugger",
        "compiles inlines optimizes parses links emits",
        "static dynamic incremental just-in-time typed recursive",
    ),
    (
        "vineyard grape barrel cellar vintage tannin cork harvest fermentation sommelier terroir decanter",
        "ferments ages ripens presses blends pours",
        "oaked tannic dry sparkling aromatic aged",
    ),
    (
        "volcano magma caldera lava eruption ash basalt vent crater pumice tephra fumarole",
        "erupts spews solidifies ruptures vents smolders",
        "volcanic molten dormant explosive igneous active",
    ),
    (
        "mortgage loan interest lender borrower collateral refinance escrow principal amortization credit down-payment",
        "borrows repays lends refinances defaults secures",
        "fixed-rate adjustable secured unsecured monthly annual",
    ),
    (
        "neuron synapse axon dendrite neurotransmitter cortex hippocampus dopamine receptor glia myelin amygdala",
        "fires inhibits transmits encodes modulates signals",
        "neural cortical synaptic excitatory inhibitory cognitive",
    ),
    (
        "striker goalkeeper midfielder penalty referee stadium league tournament corner offside header defender",
        "scores passes tackles dribbles defends shoots",
        "attacking defensive tactical injured professional rival",
    ),
    (
        "sourdough flour yeast oven crust dough starter loaf baguette gluten proofing rye",
        "kneads bakes rises proofs ferments browns",
        "crusty fluffy wholegrain sour leavened golden",
    ),
    (
        "satellite orbit telescope galaxy nebula comet asteroid planet rocket spacecraft astronaut exoplanet",
        "orbits launches observes drifts docks explores",
        "orbital lunar interstellar celestial cosmic martian",
    ),
    (
        "courtroom judge jury verdict appeal plaintiff defendant attorney testimony statute precedent subpoena",
        "rules appeals testifies litigates overturns sentences",
        "legal judicial criminal civil constitutional appellate",
    ),
    (
        "coral reef plankton kelp dolphin tide lagoon shark seagrass current estuary mollusc",
        "bleaches drifts spawns migrates filters shelters",
        "marine tidal coastal tropical pelagic brackish",
    ),
    (
        "transistor capacitor resistor diode oscillator amplifier circuit voltage inductor semiconductor gate solder",
        "amplifies switches rectifies oscillates conducts regulates",
        "analog digital integrated low-power high-frequency discrete",
    ),
    (
        "symphony violin orchestra conductor sonata melody harmony cello concerto rhythm choir overture",
        "performs composes conducts rehearses improvises tunes",
        "classical harmonic melodic baroque orchestral acoustic",
    ),
    (
        "vaccine antibody virus pathogen immunity antigen booster epidemic infection trial dose lymphocyte",
        "immunizes infects neutralizes mutates spreads protects",
        "viral immune infectious clinical attenuated contagious",
    ),
    (
        "locomotive railway carriage timetable platform signal junction freight track sleeper conductor depot",
        "departs arrives shunts derails hauls brakes",
        "electric steam high-speed suburban overnight narrow-gauge",
    ),
    (
        "wheat tractor irrigation fertilizer soil crop rotation pesticide barn silo pasture livestock",
        "plants irrigates ploughs harvests grazes fertilizes",
        "organic arable fertile drought-resistant rural agricultural",
    ),
    (
        "database index query transaction replica schema table join shard cursor partition vacuum",
        "indexes replicates commits scans joins shards",
        "relational consistent durable distributed concurrent normalized",
    ),
    (
        "painting canvas brushstroke pigment gallery sculpture portrait fresco easel palette museum curator",
        "paints sculpts exhibits restores sketches frames",
        "impressionist abstract renaissance vivid surreal modern",
    ),
    (
        "hurricane cyclone rainfall barometer forecast humidity monsoon drought thunderstorm jet-stream front hail",
        "forecasts floods intensifies dissipates precipitates gusts",
        "tropical humid stormy arid atmospheric meteorological",
    ),
    (
        "cathedral arch buttress facade column dome nave spire vault masonry blueprint architect",
        "supports spans designs restores towers buttresses",
        "gothic romanesque baroque structural ornate modernist",
    ),
    (
        "startup investor valuation equity founder venture pitch acquisition revenue runway dividend shareholder",
        "invests acquires funds scales pivots dilutes",
        "profitable seed-stage public private bankrupt lucrative",
    ),
    (
        "protein enzyme genome chromosome mutation ribosome mitochondria cell membrane gene sequence plasmid",
        "encodes catalyzes replicates folds expresses mutates",
        "genetic cellular molecular recessive dominant metabolic",
    ),
    (
        "novel poet chapter narrator stanza manuscript publisher metaphor sonnet protagonist plot epilogue",
        "writes narrates publishes edits rhymes revises",
        "poetic fictional literary lyrical tragic satirical",
    ),
    (
        "turbine windmill solar-panel battery grid inverter hydropower reactor pipeline refinery generator substation",
        "generates stores transmits converts powers refines",
        "renewable nuclear offshore efficient carbon-neutral thermal",
    ),
];

/// The generated corpus: chunk texts and query texts, each a pure function
/// of its number.
struct Corpus {
    seed: u64,
    topics: Vec<Topic>,
}

impl Corpus {
    fn new(seed: u64) -> Self {
        let topics = TOPICS
            .iter()
            .map(|(n, v, a)| Topic {
                nouns: n.split_whitespace().collect(),
                verbs: v.split_whitespace().collect(),
                adjectives: a.split_whitespace().collect(),
            })
            .collect();
        Self { seed, topics }
    }

    fn sentence(&self, rng: &mut Rng, topic: usize) -> String {
        let t = &self.topics[topic];
        let (a, n1, n2, n3, v) = (
            rng.pick(&t.adjectives),
            rng.pick(&t.nouns),
            rng.pick(&t.nouns),
            rng.pick(&t.nouns),
            rng.pick(&t.verbs),
        );
        let year = 1950 + rng.below(75);
        match rng.below(8) {
            0 => format!("The {a} {n1} {v} the {n2} near the {n3}."),
            1 => format!(
                "Observers noted in {year} that the {n1} {v} the {n2} whenever the {n3} is {a}."
            ),
            2 => format!("A {a} {n1} often {v} a {n2} during the {n3}."),
            3 => format!("Reports on the {n1} and the {n2} describe how a {a} {n3} {v} over time."),
            4 => format!("In the {year} study, the {a} {n2} {v} the {n3} more than the {n1} does."),
            5 => format!("Most of the {n1} {v} the {a} {n2}, not the {n3}."),
            6 => format!("Without a {n3}, the {n1} rarely {v} anything {a}."),
            _ => format!("Each {n2} {v} its own {a} {n1}, according to the {n3} survey of {year}."),
        }
    }

    /// Chunk `i`: three sentences, mostly of one topic.
    fn chunk(&self, i: usize) -> String {
        let mut rng = Rng::new(self.seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let topic = rng.below(self.topics.len());
        let mut text = String::with_capacity(320);
        for s in 0..3 {
            // One chunk in five strays into a second topic for a sentence.
            let t = if s == 1 && rng.below(5) == 0 {
                rng.below(self.topics.len())
            } else {
                topic
            };
            if s > 0 {
                text.push(' ');
            }
            text.push_str(&self.sentence(&mut rng, t));
        }
        text
    }

    /// Query `i`: a short question about one topic.
    fn query(&self, i: usize) -> String {
        let mut rng = Rng::new(!self.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let t = &self.topics[rng.below(self.topics.len())];
        let (a, n1, n2, v) = (
            rng.pick(&t.adjectives),
            rng.pick(&t.nouns),
            rng.pick(&t.nouns),
            rng.pick(&t.verbs),
        );
        match rng.below(4) {
            0 => format!("how does a {a} {n1} affect the {n2}? (q{i})"),
            1 => format!("which {n1} {v} the {n2} (q{i})"),
            2 => format!("what is known about {a} {n1} and {n2} #{i}"),
            _ => format!("{n2} that {v} a {a} {n1}, case {i}"),
        }
    }
}

/// Random unit vectors clustered around [`CENTROIDS`] random directions.
struct Clusters {
    centroids: Vec<Vec<f64>>,
}

fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

impl Clusters {
    fn new(seed: u64, dim: usize) -> Self {
        let mut rng = Rng::new(seed);
        let centroids = (0..CENTROIDS)
            .map(|_| {
                let mut c: Vec<f64> = (0..dim).map(|_| rng.gaussian()).collect();
                normalise(&mut c);
                c
            })
            .collect();
        Self { centroids }
    }

    fn vector(&self, rng: &mut Rng) -> Vec<f32> {
        let c = &self.centroids[rng.below(self.centroids.len())];
        let mut v: Vec<f64> = c
            .iter()
            .map(|x| x + CLUSTER_NOISE * rng.gaussian())
            .collect();
        normalise(&mut v);
        v.into_iter().map(|x| x as f32).collect()
    }
}

// ---------------------------------------------------------------------------
// Embedding through the API.
// ---------------------------------------------------------------------------

struct Embedded {
    model: ServedModel,
    vectors: Vec<Vec<f32>>,
}

/// Embeds `texts` by `embed` jobs of `batch` texts, `in_flight` at a time,
/// through the API (in order).
async fn embed_via_api(
    http: &reqwest::Client,
    api: &str,
    texts: Vec<String>,
    batch: usize,
    in_flight: usize,
) -> anyhow::Result<Embedded> {
    let batches: Vec<Vec<String>> = texts.chunks(batch).map(<[String]>::to_vec).collect();
    let total = batches.len();
    let done = AtomicUsize::new(0);
    let results: Vec<anyhow::Result<JobVectors>> = stream::iter(batches)
        .map(|b| {
            let done = &done;
            async move {
                let r = embed_job(http, api, b).await;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if total >= 20 && n.is_multiple_of(total / 10) {
                    say(format!("  {n}/{total} embed jobs done"));
                }
                r
            }
        })
        .buffered(in_flight)
        .collect()
        .await;
    let mut model = None;
    let mut vectors = Vec::with_capacity(texts.len());
    for r in results {
        let job = r?;
        model.get_or_insert((job.model, job.dim));
        vectors.extend(job.vectors);
    }
    let (model, dim) = model.context("nothing to embed")?;
    let name = hopper_shared::document_sets::model_name(&model).to_owned();
    Ok(Embedded {
        model: ServedModel { model, name, dim },
        vectors,
    })
}

/// What one `embed` job returned.
struct JobVectors {
    /// `name@version`.
    model: String,
    dim: i32,
    vectors: Vec<Vec<f32>>,
}

/// One `embed` job: submitted, waited for, its vectors read (inline or
/// from `vectors_url`).
async fn embed_job(
    http: &reqwest::Client,
    api: &str,
    texts: Vec<String>,
) -> anyhow::Result<JobVectors> {
    let r = http
        .post(format!("{api}/v1/jobs/embed"))
        .json(&json!({ "texts": texts }))
        .send()
        .await?;
    if r.status().as_u16() != 202 {
        bail!("embed submission: {} {}", r.status(), r.text().await?);
    }
    let id = r.json::<Value>().await?["id"]
        .as_str()
        .context("no job id")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(600);
    let result = loop {
        let job: Value = http
            .get(format!("{api}/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        match job["state"].as_str() {
            Some("succeeded") => break job["result"].clone(),
            Some("dead" | "failed" | "cancelled") => bail!("embed job {id}: {}", job["error"]),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("embed job {id} not done in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let model = result["model"].as_str().context("no model")?.to_owned();
    let dim = result["dim"].as_i64().context("no dim")? as i32;
    let vectors = match result["vectors_url"].as_str() {
        Some(url) => {
            let v: Value = http.get(format!("{api}{url}")).send().await?.json().await?;
            serde_json::from_value(v["vectors"].clone())?
        }
        None => serde_json::from_value(result["vectors"].clone())?,
    };
    Ok(JobVectors {
        model,
        dim,
        vectors,
    })
}

// ---------------------------------------------------------------------------
// Loading by binary COPY.
// ---------------------------------------------------------------------------

async fn load(
    conn: &mut tokio_postgres::Client,
    args: &SearchArgs,
    model: &EmbeddingModel,
    corpus: &Corpus,
    vectors: Option<&[Vec<f32>]>,
    clusters: &Clusters,
) -> anyhow::Result<()> {
    let vector_oid: u32 = conn
        .query_one("SELECT 'vector'::regtype::oid", &[])
        .await?
        .get(0);
    let vector_type = Type::new("vector".into(), vector_oid, Kind::Simple, "public".into());
    let docs = args.chunks.div_ceil(CHUNKS_PER_DOCUMENT);
    let doc_id = |d: usize| Uuid::from_u128(0xB5EA_7C40_0000_0000_0000_0000_0000_0000 | d as u128);
    let tx = conn.transaction().await?;
    tx.execute(
        "INSERT INTO document_sets (tenant, name, model) VALUES ($1, $2, $3)",
        &[&TENANT, &args.set, &model.model],
    )
    .await?;

    let sink = tx
        .copy_in(
            "COPY documents (id, tenant, name, document_set, content_type, content_sha256, \
             status, chunks_total, chunks_embedded, model) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::INT4,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for d in 0..docs {
        let n = CHUNKS_PER_DOCUMENT.min(args.chunks - d * CHUNKS_PER_DOCUMENT) as i32;
        let name = format!("bench-{d}.txt");
        let sha = format!("{:064x}", d);
        let row: [&(dyn ToSql + Sync); 10] = [
            &doc_id(d),
            &TENANT,
            &name,
            &args.set,
            &"text/plain",
            &sha,
            &"ready",
            &n,
            &n,
            &model.model,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;

    let sink = tx
        .copy_in(
            "COPY chunks (id, document_id, ordinal, text, token_count, version) \
             FROM STDIN BINARY",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::UUID,
            Type::UUID,
            Type::INT4,
            Type::TEXT,
            Type::INT4,
            Type::INT4,
        ],
    );
    pin_mut!(writer);
    for i in 0..args.chunks {
        let (d, ordinal) = (i / CHUNKS_PER_DOCUMENT, i % CHUNKS_PER_DOCUMENT);
        let doc = doc_id(d);
        let text = corpus.chunk(i);
        // Words, not tokens: the bench's chunks are plain English.
        let tokens = text.split_whitespace().count() as i32;
        let row: [&(dyn ToSql + Sync); 6] = [
            &documents::chunk_id(doc, 1, ordinal),
            &doc,
            &(ordinal as i32),
            &text,
            &tokens,
            &1i32,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    say("  documents and chunks written; vectors next");

    let sink = tx
        .copy_in("COPY chunk_vectors (chunk_id, model_id, embedding) FROM STDIN BINARY")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::UUID, Type::INT4, vector_type]);
    pin_mut!(writer);
    let mut rng = Rng::new(0x7EC7_0125);
    for i in 0..args.chunks {
        let (d, ordinal) = (i / CHUNKS_PER_DOCUMENT, i % CHUNKS_PER_DOCUMENT);
        let v = match vectors {
            Some(vs) => Vector::from(vs[i].clone()),
            None => Vector::from(clusters.vector(&mut rng)),
        };
        let row: [&(dyn ToSql + Sync); 3] =
            [&documents::chunk_id(doc_id(d), 1, ordinal), &model.id, &v];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    tx.commit().await?;
    Ok(())
}

/// Builds the model's HNSW index as `models::register` does (with `m` and
/// `ef_construction` named when they differ from pgvector's defaults) and
/// times it, logging its progress; past `--build-timeout-s` the build is
/// cancelled and the result says how far it got.
async fn build_index(
    config: &Config,
    conn: &tokio_postgres::Client,
    model: &EmbeddingModel,
    args: &SearchArgs,
    m: u32,
) -> anyhow::Result<Value> {
    // The graph must fit in maintenance_work_mem or the build slows many
    // times over: about 2 KB a 384-d vector at m = 16; twice that to spare.
    let mem_mb = (args.chunks * (model.dim as usize * 4 + m as usize * 64) * 2 / 1_000_000)
        .clamp(256, 8_192);
    // The leader builds too: one worker per further core.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallel = cores.saturating_sub(1).max(1);
    conn.batch_execute(&format!(
        "SET maintenance_work_mem = '{mem_mb}MB'; \
         SET max_parallel_maintenance_workers = {parallel}"
    ))
    .await?;
    let with = if (m, args.ef_construction) == (16, 64) {
        String::new()
    } else {
        format!(
            " WITH (m = {}, ef_construction = {})",
            m, args.ef_construction
        )
    };
    let sql = format!(
        "CREATE INDEX {index} ON chunk_vectors \
         USING hnsw ((embedding::vector({dim})) vector_cosine_ops){with} WHERE model_id = {id}",
        index = index_name(model),
        dim = model.dim,
        id = model.id,
    );
    say(format!(
        "building the HNSW index (m {}, ef_construction {}, maintenance_work_mem {mem_mb} MB, \
         {parallel} parallel workers, {} s at most)",
        m, args.ef_construction, args.build_timeout_s
    ));
    let pid: i32 = conn.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let watcher = connect(config).await?;
    let progress = Arc::new(Mutex::new(None::<(String, i64, i64)>));
    let started = Instant::now();
    let watch = {
        let progress = progress.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            let mut logged = Instant::now();
            loop {
                every.tick().await;
                let Ok(Some(row)) = watcher
                    .query_opt(
                        "SELECT phase, blocks_done, blocks_total \
                         FROM pg_stat_progress_create_index WHERE pid = $1",
                        &[&pid],
                    )
                    .await
                else {
                    continue;
                };
                let now = (row.get::<_, String>(0), row.get(1), row.get(2));
                if logged.elapsed() > Duration::from_secs(60) {
                    say(format!(
                        "  {:.0} s: {}, {} of {} table blocks read",
                        started.elapsed().as_secs_f64(),
                        now.0,
                        now.1,
                        now.2
                    ));
                    logged = Instant::now();
                }
                *progress.lock().expect("progress") = Some(now);
            }
        }
    };
    let build = conn.batch_execute(&sql);
    let limit = tokio::time::sleep(Duration::from_secs(args.build_timeout_s));
    pin_mut!(build, limit);
    let finished = tokio::select! {
        r = &mut build => { r?; true }
        () = &mut limit => false,
        () = watch => unreachable!("the watcher never ends"),
    };
    let build_s = started.elapsed().as_secs_f64();
    if !finished {
        let seen = progress.lock().expect("progress").clone();
        conn.cancel_token()
            .cancel_query(tokio_postgres::NoTls)
            .await?;
        // The build ends with "canceling statement due to user request".
        let _ = build.await;
        let (phase, done, total) = seen.unwrap_or_default();
        let fraction = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        // HNSW inserts cost more as the graph grows (log n): the linear
        // estimate is a floor.
        let estimate = (fraction > 0.0).then(|| round(build_s / fraction, 0));
        say(format!(
            "  cancelled after {build_s:.0} s in phase {phase:?}: {done} of {total} blocks \
             ({:.1}%), whole build ≥ {estimate:?} s at that pace",
            fraction * 100.0
        ));
        return Ok(json!({
            "complete": false,
            "build_s_partial": round(build_s, 1),
            "phase": phase,
            "fraction_done": round(fraction, 4),
            "build_s_estimate_min": estimate,
            "m": m,
            "ef_construction": args.ef_construction,
            "maintenance_work_mem_mb": mem_mb,
            "parallel_workers": parallel,
        }));
    }
    let bytes: i64 = conn
        .query_one(
            "SELECT pg_relation_size($1::text::regclass)",
            &[&index_name(model)],
        )
        .await?
        .get(0);
    say(format!(
        "  built in {build_s:.1} s ({:.0} MB)",
        bytes as f64 / 1e6
    ));
    Ok(json!({
        "complete": true,
        "build_s": round(build_s, 1),
        "index_mb": round(bytes as f64 / 1e6, 0),
        "m": m,
        "ef_construction": args.ef_construction,
        "maintenance_work_mem_mb": mem_mb,
        "parallel_workers": parallel,
    }))
}

// ---------------------------------------------------------------------------
// Recall against exact search.
// ---------------------------------------------------------------------------

/// The exact nearest: every vector of the model (all in the one set) by a
/// sequential scan.
fn exact_sql(model: &EmbeddingModel) -> String {
    format!(
        "SELECT v.chunk_id, ({dist})::float8 FROM chunk_vectors v WHERE {pred} \
         ORDER BY {dist} LIMIT $2",
        dist = model.distance_sql("$1"),
        pred = model.predicate_sql(),
    )
}

/// Scans of the model's index so far, polled until they reach `at_least`
/// (for up to 15 s: a backend's counts arrive after it goes idle).
async fn index_scans(
    conn: &tokio_postgres::Client,
    model: &EmbeddingModel,
    at_least: i64,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        conn.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await?;
        let n: i64 = conn
            .query_one(
                "SELECT coalesce(sum(idx_scan), 0)::int8 FROM pg_stat_user_indexes \
                 WHERE indexrelname = $1 AND schemaname = current_schema()",
                &[&index_name(model)],
            )
            .await?
            .get(0);
        if n >= at_least || Instant::now() > deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Recall@10 of the API's own search (`documents::search`, on a pool of
/// one connection whose `hnsw.ef_search` is set) against exact search, and
/// that call's latency, per `ef_search`.
async fn recall(
    config: &Config,
    conn: &mut tokio_postgres::Client,
    model: &EmbeddingModel,
    set: &str,
    queries: &[Vec<f32>],
    ef_values: &[i64],
) -> anyhow::Result<Value> {
    say(format!(
        "exact top {K} of {} queries (sequential scan)",
        queries.len()
    ));
    let started = Instant::now();
    let exact_stmt = exact_sql(model);
    let mut exact: Vec<Vec<(Uuid, f64)>> = Vec::with_capacity(queries.len());
    let tx = conn.transaction().await?;
    tx.batch_execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        .await?;
    for q in queries {
        let q = Vector::from(q.clone());
        let rows = tx.query(&exact_stmt, &[&q, &K]).await?;
        exact.push(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
    }
    tx.commit().await?;
    let exact_s = started.elapsed().as_secs_f64();
    say(format!(
        "  {:.0} ms a query",
        exact_s * 1e3 / queries.len() as f64
    ));

    // The API's search function on the API's connection settings.
    let pool = db::pool(config, 1)?;
    let scope = SearchScope {
        tenant: TENANT,
        document_set: Some(set),
        filter: None,
    };
    let mut by_ef = serde_json::Map::new();
    for &ef in ef_values {
        pool.get()
            .await?
            .batch_execute(&format!("SET hnsw.ef_search = {ef}"))
            .await?;
        // Each backend sends its statistics when idle, at most every 10 s
        // unless asked: the pool's connection is asked before every count.
        let flush = || async {
            pool.get()
                .await?
                .batch_execute("SELECT pg_stat_force_next_flush()")
                .await?;
            anyhow::Ok(())
        };
        flush().await?;
        let scans = index_scans(conn, model, 0).await?;
        // One untimed pass warms the index's pages into the buffer cache.
        let warm = queries.len().min(20);
        for q in queries.iter().take(warm) {
            documents::search(&pool, scope, model, q, K).await?;
        }
        let mut ms = Vec::with_capacity(queries.len());
        let mut found = 0usize;
        let mut short = 0usize;
        for (q, truth) in queries.iter().zip(&exact) {
            let t = Instant::now();
            let hits = documents::search(&pool, scope, model, q, K).await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if hits.len() < K as usize {
                short += 1;
            }
            // A hit counts when it is one of the exact ten or as near as
            // the tenth (equal texts give equal vectors: ties).
            let tenth = truth.last().map_or(f64::INFINITY, |t| t.1);
            found += hits
                .iter()
                .filter(|h| {
                    truth.iter().any(|t| t.0 == h.chunk_id) || 1.0 - h.score <= tenth + 1e-6
                })
                .count()
                .min(K as usize);
        }
        flush().await?;
        let expected = (warm + queries.len()) as i64;
        let used = index_scans(conn, model, scans + expected).await? - scans - warm as i64;
        if used < queries.len() as i64 {
            say(format!(
                "  WARNING: the search used the HNSW index {} for only {used} of {} queries",
                index_name(model),
                queries.len()
            ));
        }
        let recall10 = found as f64 / (queries.len() * K as usize) as f64;
        let mut s = summary(ms);
        s["recall10"] = json!(round(recall10, 4));
        s["short_results"] = json!(short);
        s["index_scans"] = json!(used);
        say(format!(
            "  ef_search {ef}: recall@10 {recall10:.4}, SQL p50 {} ms, p99 {} ms",
            s["p50_ms"], s["p99_ms"]
        ));
        by_ef.insert(ef.to_string(), s);
    }
    Ok(json!({
        "queries": queries.len(),
        "exact_ms_per_query": round(exact_s * 1e3 / queries.len() as f64, 1),
        "by_ef_search": by_ef,
    }))
}

// ---------------------------------------------------------------------------
// End to end over HTTP.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Samples {
    total_ms: Vec<f64>,
    embed_ms: Vec<f64>,
    sql_ms: Vec<f64>,
}

/// The machine's CPU time so far, from `/proc/stat` (Linux; `None`
/// elsewhere): all cores together, in clock ticks.
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...: idle and
        // iowait are the cores doing nothing.
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        let total: u64 = ticks.iter().take(8).sum();
        Some(Self {
            busy: total - idle,
            total,
        })
    }

    /// The share of all cores' time spent busy since `earlier`.
    fn busy_fraction_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// The embedding engine's counters on a worker's `/metrics` (every model
/// and stream summed).
struct EngineCounters {
    passes: f64,
    texts: f64,
    forward_s: f64,
}

impl EngineCounters {
    async fn read(http: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let text = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Self::parse(&text))
    }

    /// The counters in a Prometheus text exposition, each summed over its
    /// labels (absent: 0).
    fn parse(text: &str) -> Self {
        let sum = |name: &str| {
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        Self {
            passes: sum(m::EMBED_FORWARD_PASSES),
            texts: sum(m::EMBED_TEXTS),
            forward_s: sum(m::EMBED_FORWARD_SECONDS),
        }
    }
}

/// `texts` searched by `clients` concurrent clients, each one request at a
/// time; latency as the client sees it, and the API's own split.
async fn search_run(
    http: &reqwest::Client,
    api: &str,
    set: &str,
    texts: &[String],
    clients: usize,
    worker_metrics: Option<&str>,
) -> anyhow::Result<Value> {
    let engine_before = match worker_metrics {
        Some(url) => Some(EngineCounters::read(http, url).await?),
        None => None,
    };
    let next = AtomicUsize::new(0);
    let samples = Mutex::new(Samples::default());
    let cpu_before = CpuTimes::now();
    let started = Instant::now();
    let client = |_: usize| async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(text) = texts.get(i) else {
                return Ok::<_, anyhow::Error>(());
            };
            let t = Instant::now();
            let r = http
                .post(format!("{api}/v1/search"))
                .json(&json!({ "query": text, "k": K, "document_set": set }))
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if !status.is_success() {
                bail!("search: {status} {body}");
            }
            if body["hits"].as_array().map_or(0, Vec::len) < K as usize {
                bail!("search returned fewer than {K} hits: {body}");
            }
            let embed = body["embed_ms"].as_f64().unwrap_or(f64::NAN);
            let took = body["took_ms"].as_f64().unwrap_or(f64::NAN);
            let mut s = samples.lock().expect("samples");
            s.total_ms.push(ms);
            s.embed_ms.push(embed);
            s.sql_ms.push(took - embed);
        }
    };
    let results = futures::future::join_all((0..clients).map(client)).await;
    for r in results {
        r?;
    }
    let secs = started.elapsed().as_secs_f64();
    let s = samples.into_inner().expect("samples");
    let n = s.total_ms.len();
    let mut out = summary(s.total_ms);
    out["clients"] = json!(clients);
    out["queries_per_s"] = json!(round(n as f64 / secs, 1));
    // The whole machine's CPU (API, worker, Postgres, Redis and these
    // clients alike): near 100 % busy, latency is waiting for a core.
    if let (Some(before), Some(after)) = (cpu_before, CpuTimes::now()) {
        let busy = after.busy_fraction_since(&before);
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        out["cpu_busy_pct"] = json!(round(busy * 100.0, 1));
        out["cpu_ms_per_query"] =
            json!(round(busy * cores as f64 * secs * 1e3 / n.max(1) as f64, 2));
    }
    out["api_embed"] = summary(s.embed_ms);
    out["api_sql"] = summary(s.sql_ms);
    if let (Some(url), Some(before)) = (worker_metrics, engine_before) {
        let after = EngineCounters::read(http, url).await?;
        let passes = after.passes - before.passes;
        let per_pass = |x: f64| (passes > 0.0).then(|| round(x / passes, 2));
        out["engine"] = json!({
            "forward_passes": passes,
            "texts_per_pass": per_pass(after.texts - before.texts),
            "forward_ms_per_pass": per_pass((after.forward_s - before.forward_s) * 1e3),
        });
    }
    Ok(out)
}

async fn end_to_end(
    http: &reqwest::Client,
    args: &SearchArgs,
    corpus: &Corpus,
) -> anyhow::Result<Value> {
    // Query numbers of this size's runs: a run of another size in the same
    // Redis (the worker's cache outlives a size) never asks the same text.
    let number = |run: usize, i: usize| (args.chunks << 32) | (run << 24) | i;
    // Untimed: the first searches open connections and warm the caches.
    let warm: Vec<String> = (0..20).map(|i| corpus.query(number(0xFF, i))).collect();
    let metrics = args.worker_metrics.as_deref();
    search_run(http, &args.api, &args.set, &warm, 4, metrics).await?;
    let mut out = serde_json::Map::new();
    for (run, &clients) in args.clients.iter().enumerate() {
        // Texts never asked before: each query is embedded by the worker.
        let texts: Vec<String> = (0..args.queries)
            .map(|i| corpus.query(number(run, i)))
            .collect();
        say(format!(
            "/v1/search: {} distinct queries, {clients} concurrent clients",
            texts.len()
        ));
        let s = search_run(http, &args.api, &args.set, &texts, clients, metrics).await?;
        say(summary_line(&s));
        out.insert(format!("distinct_c{clients}"), s);
    }
    // Texts asked before (the first run's): the worker's cache answers, the
    // job round trip remains.
    let seen: Vec<String> = (0..args.queries)
        .map(|i| corpus.query(number(0, i % args.repeated_texts.max(1))))
        .collect();
    for &clients in &args.clients {
        say(format!(
            "/v1/search: {} queries repeating {} texts (cached vectors), {clients} clients",
            seen.len(),
            args.repeated_texts
        ));
        let s = search_run(http, &args.api, &args.set, &seen, clients, metrics).await?;
        say(summary_line(&s));
        out.insert(format!("repeated_c{clients}"), s);
    }
    Ok(Value::Object(out))
}

/// One search run's figures, for the log.
fn summary_line(s: &Value) -> String {
    format!(
        "  p50 {} ms, p99 {} ms ({} q/s, CPU {} % busy, {} CPU-ms a query); \
         API embed p50 {} p99 {}, SQL p50 {} p99 {}; engine {} texts a pass, {} ms a pass",
        s["p50_ms"],
        s["p99_ms"],
        s["queries_per_s"],
        s["cpu_busy_pct"],
        s["cpu_ms_per_query"],
        s["api_embed"]["p50_ms"],
        s["api_embed"]["p99_ms"],
        s["api_sql"]["p50_ms"],
        s["api_sql"]["p99_ms"],
        s["engine"]["texts_per_pass"],
        s["engine"]["forward_ms_per_pass"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_deterministic_topical_and_varied() {
        let c = Corpus::new(1);
        assert_eq!(c.chunk(7), Corpus::new(1).chunk(7));
        let chunks: std::collections::HashSet<String> = (0..2_000).map(|i| c.chunk(i)).collect();
        assert_eq!(chunks.len(), 2_000, "chunk texts repeat");
        let queries: std::collections::HashSet<String> = (0..2_000).map(|i| c.query(i)).collect();
        assert_eq!(queries.len(), 2_000, "query texts repeat");
        // A chunk's words come from its topics' vocabularies.
        let words: usize = c.chunk(3).split_whitespace().count();
        assert!((20..80).contains(&words), "{words} words");
    }

    #[test]
    fn clustered_vectors_are_unit_and_near_their_centroid() {
        let clusters = Clusters::new(5, 384);
        let mut rng = Rng::new(9);
        let v = clusters.vector(&mut rng);
        let norm: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let best = clusters
            .centroids
            .iter()
            .map(|c| {
                c.iter()
                    .zip(&v)
                    .map(|(a, b)| a * f64::from(*b))
                    .sum::<f64>()
            })
            .fold(f64::MIN, f64::max);
        assert!((0.7..0.9).contains(&best), "cosine to its centroid {best}");
    }

    #[test]
    fn engine_counters_sum_their_labels_and_skip_lookalikes() {
        let text = "# TYPE hopper_embed_forward_passes_total counter\n\
            hopper_embed_forward_passes_total{device=\"cpu\",stream=\"0\"} 3\n\
            hopper_embed_forward_passes_total{device=\"cpu\",stream=\"1\"} 4\n\
            hopper_embed_texts_total 10\n\
            hopper_embed_texts_total_other 99\n\
            hopper_embed_forward_seconds_total{device=\"cpu\"} 0.5\n";
        let c = EngineCounters::parse(text);
        assert_eq!((c.passes, c.texts, c.forward_s), (7.0, 10.0, 0.5));
        assert_eq!(EngineCounters::parse("").passes, 0.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&xs, 0.50), 50.0);
        assert_eq!(pct(&xs, 0.99), 99.0);
        assert_eq!(pct(&xs, 1.0), 100.0);
        assert!(pct(&[], 0.5).is_nan());
    }
}
