//! Dead-letter administration: a page of a queue's dead letters (of one
//! tenant, when asked), and retrying or purging some or all of them.
//!
//! Jobs reach the dead letters through a failed last attempt (`fail.lua`),
//! a lost worker's last attempt (`recover.lua`, [`crate::rescuer`]) or a
//! payload that does not decode ([`crate::fetcher`]). A retry puts a dead
//! letter back at the claim end of its queue with a fresh attempt budget; a
//! purge forgets it in Redis (its Postgres record stays). Both run
//! `dead.lua`, per partition of a split queue; retention forgets old dead
//! letters on its own (`trim.lua`).

use hopper_shared::{QueueName, jobs::JobRecord};
use serde::Serialize;
use uuid::Uuid;

use crate::{QueueClient, QueueError, client::parse_id, scripts::SCRIPTS};

/// One page of dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct DeadPage {
    /// Dead letters in the queue.
    pub total: u64,
    /// This page, newest first.
    pub jobs: Vec<JobRecord>,
}

impl QueueClient {
    /// A page of dead letters, newest first; of one tenant when given (then
    /// `total` counts that tenant's among the newest
    /// [`crate::browse::MAX_SCAN`] dead letters of the queue).
    pub async fn dead_letters(
        &self,
        queue: impl Into<QueueName>,
        tenant: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<DeadPage, QueueError> {
        let queue = queue.into();
        let partitions = self.partitions(&queue).await?;
        if partitions.len() > 1 {
            return self
                .split_dead_letters(&partitions, tenant, offset, limit)
                .await;
        }
        let keys = self.keys(&queue);
        if let Some(tenant) = tenant {
            let ids: Vec<String> = redis::cmd("ZREVRANGE")
                .arg(keys.dead())
                .arg(0)
                .arg(crate::browse::MAX_SCAN as i64 - 1)
                .query_async(&mut self.conn.clone())
                .await?;
            let ids = ids
                .iter()
                .map(|s| parse_id(s))
                .collect::<Result<Vec<_>, _>>()?;
            let owned = self.owned(&queue, tenant, &ids).await?;
            let mut jobs = Vec::new();
            for id in owned.iter().skip(offset).take(limit) {
                if let Some(job) = self.job(&queue, *id).await? {
                    jobs.push(job);
                }
            }
            return Ok(DeadPage {
                total: owned.len() as u64,
                jobs,
            });
        }
        let (ids, total): (Vec<String>, u64) = redis::pipe()
            .cmd("ZREVRANGE")
            .arg(keys.dead())
            .arg(offset)
            .arg((offset + limit).saturating_sub(1) as i64)
            .cmd("ZCARD")
            .arg(keys.dead())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.job(&queue, parse_id(&id)?).await? {
                jobs.push(job);
            }
        }
        Ok(DeadPage { total, jobs })
    }

    /// [`Self::dead_letters`] of a split queue: each partition's newest
    /// (`offset + limit`, or [`crate::browse::MAX_SCAN`] for one tenant),
    /// merged newest first.
    async fn split_dead_letters(
        &self,
        partitions: &[QueueName],
        tenant: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<DeadPage, QueueError> {
        let want = match tenant {
            Some(_) => crate::browse::MAX_SCAN,
            None => offset + limit,
        };
        let mut newest: Vec<(f64, &QueueName, Uuid)> = Vec::new();
        let mut total = 0u64;
        for partition in partitions {
            let dead = self.keys(partition).dead();
            let (ids, count): (Vec<(String, f64)>, u64) = redis::pipe()
                .cmd("ZREVRANGE")
                .arg(&dead)
                .arg(0)
                .arg(want.saturating_sub(1) as i64)
                .arg("WITHSCORES")
                .cmd("ZCARD")
                .arg(&dead)
                .query_async(&mut self.conn.clone())
                .await?;
            let mut scored = Vec::with_capacity(ids.len());
            for (id, at) in ids {
                scored.push((at, partition, parse_id(&id)?));
            }
            if let Some(tenant) = tenant {
                let ids: Vec<Uuid> = scored.iter().map(|(_, _, id)| *id).collect();
                let owned = self.owned(partition, tenant, &ids).await?;
                scored.retain(|(_, _, id)| owned.contains(id));
                total += scored.len() as u64;
            } else {
                total += count;
            }
            newest.extend(scored);
        }
        newest.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut jobs = Vec::new();
        for (_, partition, id) in newest.into_iter().skip(offset).take(limit) {
            if let Some(job) = self.job(partition, id).await? {
                jobs.push(job);
            }
        }
        Ok(DeadPage { total, jobs })
    }

    /// Retries dead letters: back to the front of the queue with a fresh
    /// attempt budget. Returns how many of `ids` were dead letters.
    pub async fn retry_dead(
        &self,
        queue: impl Into<QueueName>,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        self.dead_action(&queue, "retry", ids).await
    }

    /// Forgets dead letters (their Postgres records stay).
    pub async fn purge_dead(
        &self,
        queue: impl Into<QueueName>,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        self.dead_action(&queue, "purge", ids).await
    }

    /// Retries (`retry`) or purges (`purge`) every dead letter of `queue`
    /// (of `tenant`, when given), 500 per script call so no call is long.
    pub async fn all_dead(
        &self,
        queue: impl Into<QueueName>,
        action: &str,
        tenant: Option<&str>,
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        let mut total = 0;
        for partition in self.partitions(&queue).await? {
            total += self.partition_all_dead(&partition, action, tenant).await?;
        }
        Ok(total)
    }

    async fn partition_all_dead(
        &self,
        queue: &QueueName,
        action: &str,
        tenant: Option<&str>,
    ) -> Result<usize, QueueError> {
        let mut total = 0;
        // Dead letters of other tenants stay; step over them.
        let mut skipped = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys(queue).dead())
                .arg(skipped)
                .arg(skipped + 499)
                .query_async(&mut self.conn.clone())
                .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            let ids = ids
                .iter()
                .map(|s| parse_id(s))
                .collect::<Result<Vec<_>, _>>()?;
            let owned = match tenant {
                Some(t) => self.owned(queue, t, &ids).await?,
                None => ids.clone(),
            };
            skipped += ids.len() - owned.len();
            total += self.partition_dead_action(queue, action, &owned).await?;
        }
    }

    /// Retries or purges those of `ids` that are dead letters of `queue`
    /// (of any of its partitions).
    async fn dead_action(
        &self,
        queue: &QueueName,
        action: &str,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        if queue.partition_index() > 0 {
            return self.partition_dead_action(queue, action, ids).await;
        }
        let mut n = 0;
        for partition in self.partitions(queue).await? {
            n += self.partition_dead_action(&partition, action, ids).await?;
        }
        Ok(n)
    }

    async fn partition_dead_action(
        &self,
        queue: &QueueName,
        action: &str,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        let keys = self.keys(queue);
        let mut inv = SCRIPTS.dead.prepare_invoke();
        inv.key(keys.dead())
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .key(keys.tenant_load())
            .arg(action);
        for id in ids {
            inv.key(keys.job(id)).arg(id.to_string());
        }
        let n: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(n as usize)
    }
}
