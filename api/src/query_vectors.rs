//! Query vectors read straight from the workers' embedding cache.
//!
//! A vector search needs its query embedded, and the API holds no model: it
//! queues an `embed` job and waits for a worker. A query asked before —
//! a popular search, a retried request, a page of results — was embedded
//! then, and the worker's cache (`worker/src/pipeline/cache.rs`) still
//! holds its vector, keyed by the model's `name@version` and the sha256 of
//! the whitespace-normalised text. [`cached`] reads that key, so such a
//! search skips the job's round trip (push, claim, ack, result poll: most
//! of a search's time on a loaded worker) and only asks Postgres.
//!
//! The key and value formats here must stay the worker's; the test below
//! pins both. A miss (or a vector of the wrong length) returns `None` and
//! the caller queues the job as before.

use hopper_queue::RedisConn;
pub use hopper_shared::embeddings::cache_key;

/// The vector of `text` a worker cached for `model`, if it has one of
/// `dim` floats (stored as little-endian f32 bytes).
pub async fn cached(
    conn: &RedisConn,
    prefix: &str,
    model: &str,
    dim: usize,
    text: &str,
) -> redis::RedisResult<Option<Vec<f32>>> {
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(cache_key(prefix, model, text))
        .query_async(&mut conn.clone())
        .await?;
    Ok(raw
        .filter(|b| b.len() == dim * 4)
        .map(|b| hopper_shared::embeddings::vector_from_bytes(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_workers() {
        // sha256("hello world"): the text after whitespace is normalised.
        assert_eq!(
            cache_key("hopper", "mini@0123456789ab", "  hello \n\t world "),
            "{hopper:embcache}:mini@0123456789ab:\
             b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[tokio::test]
    async fn a_cached_vector_is_read_back_and_a_wrong_length_is_a_miss() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let redis = hopper_queue::Redis::open(&url, &Default::default()).unwrap();
        let conn = redis.shared().await.unwrap();
        let prefix = format!("qvtest-{}", uuid::Uuid::new_v4().simple());
        let model = "mini@0123456789ab";
        let vector = [0.25f32, -1.5, 3.0];
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        let key = cache_key(&prefix, model, "what is a glacier");
        redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .arg("EX")
            .arg(60)
            .query_async::<()>(&mut conn.clone())
            .await
            .unwrap();
        let got = cached(&conn, &prefix, model, 3, " what  is a\nglacier ").await;
        assert_eq!(got.unwrap(), Some(vector.to_vec()));
        assert_eq!(
            cached(&conn, &prefix, model, 384, "what is a glacier")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            cached(&conn, &prefix, "mini@ffffffffffff", 3, "what is a glacier")
                .await
                .unwrap(),
            None
        );
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut conn.clone())
            .await
            .unwrap();
    }
}
