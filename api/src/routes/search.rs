//! `POST /v1/search`: vector, keyword or hybrid search over a tenant's
//! chunks.
//!
//! The API holds no model. `vector` (the default) needs the query's vector
//! first. When the model's version is known (a document set's), it is read
//! from the workers' embedding cache if the text was embedded before, else
//! asked of a worker on the query lane ([`crate::query_lane`]: a request
//! and a reply over Redis, no job); otherwise — no version known, no worker
//! listening, no answer in time — an `embed` job at high priority (claimed
//! before any document batch) embeds it. Then pgvector's HNSW index finds
//! the nearest chunks by cosine distance.
//! `keyword` asks Postgres full text (`websearch_to_tsquery` in the
//! documents' language, ranked by `ts_rank_cd`) and queues no job at all.
//! `hybrid` runs both — the keyword query while the embed job runs — over
//! the top [`candidates`] of each and fuses the two lists by reciprocal
//! rank fusion ([`fuse`]): a chunk scores Σ weight / ([`RRF_K`] + rank).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{Json, extract::State, extract::rejection::JsonRejection, http::StatusCode};
use hopper_queue::{Priority, PushOptions};
use hopper_shared::{
    document_sets,
    documents::{self, Hit, SearchMode, SearchScope},
    jobs::{JobKind, JobState},
    metrics as m,
    models::{self, EmbeddingModel},
    retry_policy::{self, Pauses},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    AppState, auth::Caller, error::ApiError, query_lane::Asked, query_vectors,
    routes::document_sets::unknown_model_unless_served,
};
use hopper_shared::keys::Scope;

/// How long a search waits for its query vector.
const EMBED_TIMEOUT: Duration = Duration::from_secs(30);

/// The most hits a search may ask for.
pub const MAX_K: i64 = 100;

/// The largest weight a hybrid search may give one list.
pub const MAX_WEIGHT: f64 = 100.0;

/// Reciprocal rank fusion's constant (Cormack, Clarke and Büttcher, 2009):
/// it damps the lead of the first ranks, so a chunk found high in both
/// lists beats one found first in only one.
pub const RRF_K: f64 = 60.0;

/// A search request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for (1–10,000 characters).
    #[schema(min_length = 1, max_length = 10000)]
    query: String,
    /// Hits wanted (1–100, default 10).
    #[serde(default = "default_k")]
    #[schema(minimum = 1, maximum = 100)]
    k: i64,
    /// Only this document set.
    #[serde(default)]
    document_set: Option<String>,
    /// Documents whose metadata contains this object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// Embedding model (not used by `keyword`). In a `document_set`: the
    /// set's when absent; another only while the set has its vectors (the
    /// model a re-embed is switching to, or the one it switched from).
    /// Outside sets: a model a worker serves; the worker's default when
    /// absent.
    #[serde(default)]
    model: Option<String>,
    /// How chunks are ranked: `vector` (default), `keyword` or `hybrid`.
    // Read by hand (`parse_mode`), so that any bad value is a 422 naming `mode`.
    #[serde(default)]
    #[schema(value_type = Option<SearchMode>)]
    mode: Option<Value>,
    /// `hybrid`: each list's weight in the fusion (default 1 each).
    // Read by hand (`parse_weights`), like `mode`.
    #[serde(default)]
    #[schema(value_type = Option<SearchWeights>)]
    weights: Option<Value>,
}

/// The weights of a hybrid search's two lists: a chunk scores
/// `vector / (60 + its vector rank) + keyword / (60 + its keyword rank)`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchWeights {
    /// Weight of the nearest-vector list (0–100, default 1).
    #[serde(default = "one")]
    #[schema(minimum = 0, maximum = 100)]
    pub vector: f64,
    /// Weight of the keyword list (0–100, default 1).
    #[serde(default = "one")]
    #[schema(minimum = 0, maximum = 100)]
    pub keyword: f64,
}

impl Default for SearchWeights {
    fn default() -> Self {
        Self {
            vector: 1.0,
            keyword: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

fn default_k() -> i64 {
    10
}

fn bad(field: &str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_search", detail)
        .field(Some(field.into()))
}

/// Reads `mode`: absent or null is `vector`.
fn parse_mode(mode: Option<Value>) -> Result<SearchMode, ApiError> {
    match mode {
        None | Some(Value::Null) => Ok(SearchMode::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            bad(
                "mode",
                format!("mode must be \"vector\", \"keyword\" or \"hybrid\", not {v}"),
            )
        }),
    }
}

/// Reads `weights`: absent or null is 1 each; each 0–100, not both 0.
fn parse_weights(weights: Option<Value>) -> Result<SearchWeights, ApiError> {
    let weights = match weights {
        None | Some(Value::Null) => return Ok(SearchWeights::default()),
        // serde would read an array as the struct's fields in order.
        Some(v) if !v.is_object() => {
            return Err(bad(
                "weights",
                format!(
                    "weights must be an object such as {{\"vector\": 1, \"keyword\": 2}}, not {v}"
                ),
            ));
        }
        Some(v) => serde_json::from_value::<SearchWeights>(v).map_err(|e| {
            bad(
                "weights",
                format!("weights must be {{\"vector\": number, \"keyword\": number}}: {e}"),
            )
        })?,
    };
    for (field, w) in [
        ("weights.vector", weights.vector),
        ("weights.keyword", weights.keyword),
    ] {
        if !(0.0..=MAX_WEIGHT).contains(&w) {
            return Err(bad(field, format!("a weight is 0-{MAX_WEIGHT}, not {w}")));
        }
    }
    if weights.vector + weights.keyword <= 0.0 {
        return Err(bad("weights", "at least one weight must be above 0"));
    }
    Ok(weights)
}

/// How many hits of each list a hybrid search fuses: four per hit asked
/// for, at least 50 (a chunk ranked past that adds little: 1/110 or less).
pub fn candidates(k: i64) -> i64 {
    (4 * k).max(50)
}

/// Reciprocal rank fusion of a vector list and a keyword list (each best
/// first): every chunk in either scores Σ weight / ([`RRF_K`] + rank), rank
/// counted from 1 in each list it is in. The best `k` come back, best
/// first (ties: the better of its ranks, then the chunk id), each with its
/// fused `score` and both ranks.
pub fn fuse(vector: Vec<Hit>, keyword: Vec<Hit>, weights: SearchWeights, k: usize) -> Vec<Hit> {
    let mut fused: HashMap<uuid::Uuid, Hit> = HashMap::new();
    let lists = [
        (vector, weights.vector, true),
        (keyword, weights.keyword, false),
    ];
    for (list, weight, is_vector) in lists {
        for (i, hit) in list.into_iter().enumerate() {
            let rank = i as u32 + 1;
            let entry = fused
                .entry(hit.chunk_id)
                .or_insert(Hit { score: 0.0, ..hit });
            entry.score += weight / (RRF_K + f64::from(rank));
            if is_vector {
                entry.vector_rank = Some(rank);
            } else {
                entry.keyword_rank = Some(rank);
            }
        }
    }
    let best_rank = |h: &Hit| h.vector_rank.into_iter().chain(h.keyword_rank).min();
    let mut hits: Vec<Hit> = fused.into_values().collect();
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| best_rank(a).cmp(&best_rank(b)))
            .then_with(|| a.chunk_id.cmp(&b.chunk_id))
    });
    hits.truncate(k);
    hits
}

/// `POST /v1/search`.
#[utoipa::path(post, path = "/v1/search", tag = "search", request_body = SearchRequest,
    responses((status = 200, body = crate::openapi::SearchResult), (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad query, k, mode, weights or filter; or the query could not be embedded", body = crate::openapi::ErrorBody),
        (status = 504, description = "No embed worker answered in time (vector and hybrid)", body = crate::openapi::ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let Json(req) = body?;
    if req.query.trim().is_empty() || req.query.chars().count() > 10_000 {
        return Err(bad("query", "query must be 1-10,000 characters"));
    }
    if !(1..=MAX_K).contains(&req.k) {
        return Err(bad("k", format!("k must be between 1 and {MAX_K}")));
    }
    let mode = parse_mode(req.mode)?;
    let weights = parse_weights(req.weights)?;
    // Keyword and hybrid searches hand the query to Postgres.
    ApiError::no_nul("query", &req.query)?;
    ApiError::no_nul("document_set", req.document_set.as_deref().unwrap_or(""))?;
    if let Some(f) = &req.filter {
        ApiError::no_nul_json("filter", f)?;
    }
    if req.filter.as_ref().is_some_and(|f| !f.is_object()) {
        return Err(bad(
            "filter",
            "filter must be a JSON object (matched by containment)",
        ));
    }
    let scope = SearchScope {
        tenant: &caller.tenant,
        document_set: req.document_set.as_deref(),
        filter: req.filter.as_ref(),
    };
    let started = Instant::now();
    let model = match mode {
        SearchMode::Keyword => QueryModel::Model(None),
        _ => query_model(&state, &caller, req.document_set.as_deref(), req.model).await?,
    };
    let (hits, model, embed_ms) = match (mode, model) {
        (SearchMode::Keyword, _) => (
            documents::keyword_search(&state.pool, scope, &req.query, req.k).await?,
            None,
            0.0,
        ),
        // A set that does not exist (yet) has nothing to find.
        (_, QueryModel::NoSet) => (Vec::new(), None, 0.0),
        (SearchMode::Vector, QueryModel::Model(model)) => {
            let known = registered(&state, &model).await?;
            let (vector, model) =
                embed_query(&state, &caller, &req.query, &model, known.as_ref()).await?;
            let embed_ms = started.elapsed().as_secs_f64() * 1e3;
            let hits = nearest(&state, scope, known, &model, &vector, req.k).await?;
            (hits, Some(model), embed_ms)
        }
        (SearchMode::Hybrid, QueryModel::Model(model)) => {
            let n = candidates(req.k);
            let known = registered(&state, &model).await?;
            // The keyword list needs no vector: it runs while the query is embedded.
            let embedded = async {
                let embedded =
                    embed_query(&state, &caller, &req.query, &model, known.as_ref()).await;
                (embedded, started.elapsed().as_secs_f64() * 1e3)
            };
            let ((embedded, embed_ms), keyword) = tokio::join!(
                embedded,
                documents::keyword_search(&state.pool, scope, &req.query, n)
            );
            let (vector, model) = embedded?;
            let nearest = nearest(&state, scope, known, &model, &vector, n).await?;
            let hits = fuse(nearest, keyword?, weights, req.k as usize);
            (hits, Some(model), embed_ms)
        }
    };
    Ok(Json(json!({
        "query": req.query,
        "k": req.k,
        "mode": mode.as_str(),
        "model": model,
        "embed_ms": embed_ms,
        "took_ms": started.elapsed().as_secs_f64() * 1e3,
        "hits": hits,
    })))
}

/// Which model a vector search embeds its query with.
enum QueryModel {
    /// This one (`None`: the worker's default).
    Model(Option<String>),
    /// None: the search names a set the tenant does not have.
    NoSet,
}

/// The model a vector search embeds its query with: in a document set, the
/// set's (or, when the request names one, that model while the set has its
/// vectors: the model it is re-embedding to, or the one it switched from,
/// for an A/B); outside sets, the request's model (one a worker serves) or
/// the worker's default.
async fn query_model(
    state: &AppState,
    caller: &Caller,
    set: Option<&str>,
    wanted: Option<String>,
) -> Result<QueryModel, ApiError> {
    if let Some(m) = &wanted {
        ApiError::no_nul("model", m)?;
    }
    let Some(set) = set else {
        if let Some(m) = &wanted {
            let served = models::served(&state.pool).await?;
            unknown_model_unless_served(&served, m, "model")?;
        }
        return Ok(QueryModel::Model(wanted));
    };
    let Some(of_set) = document_sets::models_of(&state.pool, &caller.tenant, set).await? else {
        return Ok(QueryModel::NoSet);
    };
    match wanted {
        None => Ok(QueryModel::Model(of_set.model)),
        Some(m) => of_set
            .find(&m)
            .map(|m| QueryModel::Model(Some(m)))
            .ok_or_else(|| {
                bad(
                    "model",
                    format!(
                        "document set {set:?} has no vectors of model {m}; it has: {}",
                        of_set.names().join(", ")
                    ),
                )
            }),
    }
}

/// The registered row of the query's model when the search names it with
/// its version (a document set's model), read once per search: the cache
/// read needs its dimension, the index search its id. `None` for the
/// worker's default, known only once the query is embedded.
async fn registered(
    state: &AppState,
    model: &Option<String>,
) -> Result<Option<EmbeddingModel>, ApiError> {
    match model.as_deref().filter(|m| m.contains('@')) {
        Some(versioned) => Ok(models::lookup(&state.pool, versioned).await?),
        None => Ok(None),
    }
}

/// The nearest chunks to `vector` among the vectors of `model` (the model
/// the query was embedded with; `known` its row when [`registered`] read
/// it): none when no vector of it was ever stored.
async fn nearest(
    state: &AppState,
    scope: SearchScope<'_>,
    known: Option<EmbeddingModel>,
    model: &str,
    vector: &[f32],
    k: i64,
) -> Result<Vec<Hit>, ApiError> {
    let known = match known.filter(|m| m.model == model) {
        Some(m) => Some(m),
        None => models::lookup(&state.pool, model).await?,
    };
    let Some(model) = known else {
        return Ok(Vec::new());
    };
    Ok(documents::search(&state.pool, scope, &model, vector, k).await?)
}

/// The query's vector: from the workers' embedding cache when the model's
/// version is known and a worker embedded this text before
/// ([`crate::query_vectors`]), else by a high-priority `embed` job of the
/// caller's tenant (counted against its caps like any job), waited for.
async fn embed_query(
    state: &AppState,
    caller: &Caller,
    query: &str,
    model: &Option<String>,
    known: Option<&EmbeddingModel>,
) -> Result<(Vec<f32>, String), ApiError> {
    if let Some(known) = known {
        let conn = state.queue.connection();
        let prefix = state.queue.prefix();
        match query_vectors::cached(&conn, prefix, &known.model, known.dim as usize, query).await {
            Ok(Some(vector)) => {
                metrics::counter!(m::SEARCH_QUERY_CACHE_HITS).increment(1);
                return Ok((vector, known.model.clone()));
            }
            Ok(None) => {}
            // A cache outage only costs the job's round trip.
            Err(e) => tracing::warn!("query vector cache unavailable: {e}"),
        }
        match state.lane.ask(&known.model, query).await {
            Asked::Answered(vector) if vector.len() == known.dim as usize => {
                return Ok((vector, known.model.clone()));
            }
            Asked::Answered(vector) => tracing::warn!(
                "query lane answered {} floats for {} ({}-d): asking by a job",
                vector.len(),
                known.model,
                known.dim
            ),
            Asked::Failed(e) => return Err(embed_failed(&e)),
            Asked::NotAnswered => {}
        }
    }
    let args = json!({ "texts": [query], "model": model });
    let opts = PushOptions {
        priority: Priority::High,
        max_attempts: Some(2),
        tenant: Some(caller.tenant.to_string()),
        // A query's embed job counts against the tenant's caps like any job.
        max_unfinished: Some(state.config.api.max_pending_per_tenant),
        max_high_unfinished: Some(state.config.api.max_high_priority_per_tenant),
        ..Default::default()
    };
    let job = state.queue.push(JobKind::Embed, &args, &opts).await?;
    wait_for_vector(state, job.id).await
}

/// The query could not be embedded: the engine's reason.
fn embed_failed(reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "embed_failed",
        format!("the query could not be embedded: {reason}"),
    )
}

/// Polls the query's embed job until it is done, at the pace of
/// [`retry_policy::embed_poll`] (1 ms, doubling to 20 ms).
async fn wait_for_vector(state: &AppState, id: uuid::Uuid) -> Result<(Vec<f32>, String), ApiError> {
    let deadline = Instant::now() + EMBED_TIMEOUT;
    let mut pauses = Pauses::new(retry_policy::embed_poll());
    loop {
        if let Some(job) = state.queue.job(JobKind::Embed, id).await? {
            match job.state {
                JobState::Succeeded => {
                    let r = job.result.unwrap_or_default();
                    let v: Vec<f32> =
                        serde_json::from_value(r["vectors"][0].clone()).unwrap_or_default();
                    let model = r["model"].as_str().unwrap_or_default().to_owned();
                    return Ok((v, model));
                }
                JobState::Dead | JobState::Failed | JobState::Cancelled => {
                    return Err(embed_failed(&job.error.unwrap_or_default()));
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "embed_timeout",
                "no embed worker answered within 30 s (is one running with --queues embed?)",
            ));
        }
        tokio::time::sleep(pauses.next_pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(n: u128) -> Hit {
        Hit {
            chunk_id: uuid::Uuid::from_u128(n),
            document_id: uuid::Uuid::from_u128(n),
            document_name: format!("doc {n}"),
            score: 0.5,
            text: String::new(),
            ordinal: 0,
            vector_rank: None,
            keyword_rank: None,
        }
    }

    fn ids(hits: &[Hit]) -> Vec<u128> {
        hits.iter().map(|h| h.chunk_id.as_u128()).collect()
    }

    #[test]
    fn a_chunk_in_both_lists_beats_one_first_in_a_single_list() {
        let vector = vec![hit(1), hit(2), hit(3)];
        let keyword = vec![hit(4), hit(3)];
        let fused = fuse(vector, keyword, SearchWeights::default(), 10);
        assert_eq!(ids(&fused), [3, 1, 4, 2]);
        let three = &fused[0];
        assert_eq!((three.vector_rank, three.keyword_rank), (Some(3), Some(2)));
        assert!((three.score - (1.0 / 63.0 + 1.0 / 62.0)).abs() < 1e-12);
        // Equal scores (rank 1 of one list each): the lower chunk id first.
        assert_eq!(fused[1].score, fused[2].score);
        assert_eq!(
            (fused[2].vector_rank, fused[2].keyword_rank),
            (None, Some(1))
        );
    }

    #[test]
    fn weights_scale_each_list_and_k_cuts() {
        let weights = SearchWeights {
            vector: 1.0,
            keyword: 3.0,
        };
        let fused = fuse(vec![hit(1), hit(2)], vec![hit(2), hit(5)], weights, 2);
        assert_eq!(ids(&fused), [2, 5]);
        assert!((fused[0].score - (1.0 / 62.0 + 3.0 / 61.0)).abs() < 1e-12);
        assert!(fuse(vec![], vec![], weights, 5).is_empty());
    }

    #[test]
    fn mode_and_weights_are_read_with_their_field_named() {
        assert_eq!(parse_mode(None).unwrap(), SearchMode::Vector);
        assert_eq!(
            parse_mode(Some(json!("hybrid"))).unwrap(),
            SearchMode::Hybrid
        );
        for wrong in [json!("fuzzy"), json!(3), json!({"a": 1})] {
            let e = parse_mode(Some(wrong)).unwrap_err();
            assert_eq!(e.field_name(), Some("mode"));
        }
        assert_eq!(parse_weights(None).unwrap(), SearchWeights::default());
        let w = parse_weights(Some(json!({"keyword": 2}))).unwrap();
        assert_eq!((w.vector, w.keyword), (1.0, 2.0));
        for (wrong, field) in [
            (json!({"vector": -1}), "weights.vector"),
            (json!({"keyword": 101}), "weights.keyword"),
            (json!({"vector": 0, "keyword": 0}), "weights"),
            (json!({"bm25": 1}), "weights"),
            (json!([1, 2]), "weights"),
        ] {
            let e = parse_weights(Some(wrong.clone())).unwrap_err();
            assert_eq!(e.field_name(), Some(field), "{wrong}");
        }
    }

    #[test]
    fn hybrid_fuses_at_least_fifty_candidates_and_four_per_hit() {
        assert_eq!(candidates(1), 50);
        assert_eq!(candidates(100), 400);
    }
}
