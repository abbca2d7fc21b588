//! A task's rate limit: at most `tokens` jobs started per `per`, across
//! every worker (`20/s`, `600/m`, `1000/h`).
//!
//! The limit is a token bucket kept in Redis beside the task's queue and
//! spent by the claim script (`hopper-queue`'s `claim.lua`): a bucket holds
//! at most `tokens` (one period's worth, the largest burst) and refills
//! continuously at `tokens / per`. A claim takes no more jobs than the
//! bucket holds, so a limited task's jobs wait in their queue — holding no
//! worker slot — and the claimer sleeps until the next token is due.
//! Set per task in its definition (`settings.rate_limit`) or per process
//! with `HOPPER_QUEUE_<NAME>_RATE_LIMIT` (`off` removes it).

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// The most tokens a bucket may hold.
pub const MAX_TOKENS: u32 = 1_000_000;

/// At most `tokens` job starts per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts allowed per period (also the bucket's size: the largest burst).
    pub tokens: u32,
    /// The period: a second, a minute or an hour.
    pub per: Duration,
}

impl RateLimit {
    /// The period in milliseconds.
    pub fn per_ms(&self) -> u64 {
        self.per.as_millis() as u64
    }

    /// One of `n` equal shares (a partitioned queue's partitions each keep
    /// a bucket): the same bucket size refilled `n` times slower, so the
    /// shares add up to this rate exactly (bursts, up to `n` buckets full,
    /// may add up to more).
    pub fn split(self, n: u16) -> Self {
        Self {
            tokens: self.tokens,
            per: self.per * u32::from(n.max(1)),
        }
    }
}

/// A rate limit that cannot be read; the message says what one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit `{0}`: write <starts>/<s|m|h>, such as 20/s or 600/m (1 to 1000000 starts)"
)]
pub struct InvalidRateLimit(pub String);

impl FromStr for RateLimit {
    type Err = InvalidRateLimit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidRateLimit(s.chars().take(40).collect());
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let tokens: u32 = count.trim().parse().map_err(|_| bad())?;
        if tokens == 0 || tokens > MAX_TOKENS {
            return Err(bad());
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(RateLimit { tokens, per })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.tokens)
    }
}

impl Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_and_print_back() {
        for (text, tokens, secs) in [("20/s", 20, 1), ("600/m", 600, 60), ("5/h", 5, 3600)] {
            let r: RateLimit = text.parse().unwrap();
            assert_eq!((r.tokens, r.per.as_secs()), (tokens, secs));
            assert_eq!(r.to_string(), text);
        }
        assert_eq!(
            " 10 / minute ".parse::<RateLimit>().unwrap().to_string(),
            "10/m"
        );
    }

    #[test]
    fn bad_limits_are_refused() {
        for bad in ["", "20", "0/s", "x/s", "20/d", "-1/s", "1000001/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }
}
