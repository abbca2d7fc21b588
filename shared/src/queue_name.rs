//! The name of a queue (= the task it runs): a validated string.
//!
//! Queues are data: every Redis key, record, metric label and per-queue
//! setting is addressed by a [`QueueName`], not by an enum. A name matches
//! `[a-z0-9][a-z0-9_.-]{0,62}` (1–63 characters: lower-case letters, digits,
//! `_`, `.` and `-`, never first), so it is safe inside a Redis hash tag, a
//! URL path segment, an environment variable suffix and a Prometheus label.
//!
//! A name is cheap to clone: the six built-in kinds convert for free (a
//! `&'static str` inside) and any other name shares one `Arc<str>`.

use std::{borrow::Borrow, cmp::Ordering, fmt, hash, str::FromStr, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::jobs::JobKind;

/// The longest queue name, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 63;

/// The rule a queue name follows, as a regular expression (for messages and
/// the OpenAPI document).
pub const QUEUE_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_.-]{0,62}$";

/// Separates a queue's name from a partition's number in the partition's
/// name (`ocr~2`, see [`QueueName::partition`]). No queue name holds it, so
/// no queue's name is ever taken by another queue's partition.
pub const PARTITION_SEPARATOR: char = '~';

/// The most partitions a queue may be split into.
pub const MAX_PARTITIONS: u16 = 64;

/// A validated queue name. Compare, hash and order it as its string.
///
/// Inside the queue core a name may also denote one partition of a
/// partitioned queue (`<queue>~<k>`, k ≥ 1; partition 0 is the queue's own
/// name): the Redis keys of a partition carry its own hash tag, and every
/// per-queue script works on a partition as on a queue. Such names never
/// come from users ([`QueueName::new`] refuses `~`): only
/// [`QueueName::partition`] and [`QueueName::parse_partition`] make them.
#[derive(Clone)]
pub struct QueueName(Repr);

#[derive(Clone)]
enum Repr {
    /// A built-in kind's name: no allocation.
    Static(&'static str),
    /// Any other name, shared by every clone.
    Shared(Arc<str>),
}

/// A string that is not a valid queue name; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue name `{name}`: {problem} (a queue name matches {QUEUE_NAME_PATTERN})")]
pub struct InvalidQueueName {
    /// The refused name (cut to 100 characters).
    pub name: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl QueueName {
    /// Checks `name` against the rule and keeps it.
    pub fn new(name: &str) -> Result<Self, InvalidQueueName> {
        validate(name)?;
        Ok(Self(Repr::Shared(name.into())))
    }

    /// A name known when compiling (a built-in queue Hopper itself
    /// pushes to); an invalid one fails the build when used in a `const`.
    pub const fn from_static(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= MAX_QUEUE_NAME_LEN,
            "queue name length"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let alnum = b.is_ascii_lowercase() || b.is_ascii_digit();
            assert!(
                alnum || (i > 0 && matches!(b, b'_' | b'.' | b'-')),
                "queue name character"
            );
            i += 1;
        }
        Self(Repr::Static(name))
    }

    /// Partition `k` of this queue: the queue itself for 0, `<name>~<k>`
    /// otherwise (for a partition's name, of the queue it belongs to).
    pub fn partition(&self, k: u16) -> Self {
        let logical = self.logical();
        if k == 0 {
            return logical;
        }
        Self(Repr::Shared(
            format!("{}{PARTITION_SEPARATOR}{k}", logical.as_str()).into(),
        ))
    }

    /// The queue this name belongs to: itself, or for a partition's name
    /// the partitioned queue's.
    pub fn logical(&self) -> Self {
        match self.as_str().split_once(PARTITION_SEPARATOR) {
            Some((queue, _)) => Self(Repr::Shared(queue.into())),
            None => self.clone(),
        }
    }

    /// The partition this name denotes: 0 for a queue's own name.
    pub fn partition_index(&self) -> u16 {
        self.as_str()
            .split_once(PARTITION_SEPARATOR)
            .and_then(|(_, k)| k.parse().ok())
            .unwrap_or(0)
    }

    /// Parses a queue's name or one of its partitions' (`<queue>~<k>`, as
    /// the API's lease tokens carry it).
    pub fn parse_partition(name: &str) -> Result<Self, InvalidQueueName> {
        let Some((queue, k)) = name.split_once(PARTITION_SEPARATOR) else {
            return Self::new(name);
        };
        let queue = Self::new(queue)?;
        match k.parse::<u16>() {
            Ok(n) if (1..MAX_PARTITIONS).contains(&n) && n.to_string() == k => {
                Ok(queue.partition(n))
            }
            _ => Err(InvalidQueueName {
                name: name.chars().take(100).collect(),
                problem: "its partition number is not between 1 and 63",
            }),
        }
    }

    /// The name as a metrics label value: no allocation (a static name or
    /// a shared `Arc<str>`). A partition is labelled as its queue: metrics
    /// see a partitioned queue as one.
    pub fn label(&self) -> metrics::SharedString {
        if self.as_str().contains(PARTITION_SEPARATOR) {
            return metrics::SharedString::from(self.logical().as_str().to_owned());
        }
        match &self.0 {
            Repr::Static(s) => metrics::SharedString::from(*s),
            Repr::Shared(s) => metrics::SharedString::from(Arc::clone(s)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The built-in kind of this name, if it is one.
    pub fn job_kind(&self) -> Option<JobKind> {
        self.as_str().parse().ok()
    }

    /// The name as the suffix of an environment variable: upper-cased,
    /// `.` and `-` become `_` (`ocr.v2` → `OCR_V2`).
    pub fn env_suffix(&self) -> String {
        self.as_str()
            .chars()
            .map(|c| match c {
                '.' | '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect()
    }
}

/// Checks `name` against [`QUEUE_NAME_PATTERN`].
fn validate(name: &str) -> Result<(), InvalidQueueName> {
    let refuse = |problem| {
        Err(InvalidQueueName {
            name: name.chars().take(100).collect(),
            problem,
        })
    };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c);
    let Some(first) = name.chars().next() else {
        return refuse("it is empty");
    };
    if name.len() > MAX_QUEUE_NAME_LEN {
        return refuse("it is longer than 63 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return refuse("it must start with a lower-case letter or a digit");
    }
    if !name.chars().all(allowed) {
        return refuse("it may hold only lower-case letters, digits, `_`, `.` and `-`");
    }
    Ok(())
}

impl From<JobKind> for QueueName {
    fn from(kind: JobKind) -> Self {
        Self(Repr::Static(kind.as_str()))
    }
}

impl From<&QueueName> for QueueName {
    fn from(name: &QueueName) -> Self {
        name.clone()
    }
}

impl FromStr for QueueName {
    type Err = InvalidQueueName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for QueueName {
    type Error = InvalidQueueName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate(&s)?;
        Ok(Self(Repr::Shared(s.into())))
    }
}

impl AsRef<str> for QueueName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for QueueName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for QueueName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for QueueName {}

impl PartialEq<JobKind> for QueueName {
    fn eq(&self, other: &JobKind) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<str> for QueueName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for QueueName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl hash::Hash for QueueName {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for QueueName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueueName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Serialize for QueueName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueueName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::try_from(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for QueueName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(QUEUE_NAME_PATTERN))
            .min_length(Some(1))
            .max_length(Some(MAX_QUEUE_NAME_LEN))
            .description(Some("A queue (task) name."))
            .examples(["ocr.v2"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for QueueName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_named_after_its_queue_and_found_back() {
        let q = QueueName::new("ocr.v2").unwrap();
        assert_eq!(q.partition(0), q);
        let p2 = q.partition(2);
        assert_eq!(p2.as_str(), "ocr.v2~2");
        assert_eq!(p2.logical(), q);
        assert_eq!(p2.partition_index(), 2);
        assert_eq!(p2.partition(1).as_str(), "ocr.v2~1");
        assert_eq!(&*p2.label(), "ocr.v2");
        assert_eq!(QueueName::parse_partition("ocr.v2~2").unwrap(), p2);
        assert_eq!(QueueName::parse_partition("ocr.v2").unwrap(), q);
        for bad in [
            "ocr.v2~0",
            "ocr.v2~02",
            "ocr.v2~64",
            "ocr.v2~x",
            "OCR~1",
            "a~1~2",
        ] {
            assert!(QueueName::parse_partition(bad).is_err(), "{bad}");
        }
        assert!(
            QueueName::new("ocr.v2~2").is_err(),
            "users never name a partition"
        );
    }

    #[test]
    fn valid_names_are_kept_as_given() {
        for name in ["a", "0", "ocr.v2", "bio-bert_2", "x.y-z_0", &"a".repeat(63)] {
            let q: QueueName = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(q.as_str(), name);
            assert_eq!(q.to_string(), name);
        }
    }

    #[test]
    fn invalid_names_are_refused_naming_the_rule() {
        let too_long = "a".repeat(64);
        for name in [
            "", &too_long, "OCR", "Ocr", ".ocr", "-ocr", "_ocr", "ocr v2", "ocr/v2", "ocr:v2",
            "{ocr}", "é",
        ] {
            let err = name.parse::<QueueName>().expect_err(name);
            let message = err.to_string();
            assert!(message.contains(QUEUE_NAME_PATTERN), "{message}");
        }
        assert!(
            too_long
                .parse::<QueueName>()
                .unwrap_err()
                .problem
                .contains("63")
        );
        assert!(
            "".parse::<QueueName>()
                .unwrap_err()
                .problem
                .contains("empty")
        );
    }

    #[test]
    fn serde_is_a_plain_string_and_deserialising_validates() {
        let q: QueueName = "ocr.v2".parse().unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"ocr.v2\"");
        let back: QueueName = serde_json::from_str("\"ocr.v2\"").unwrap();
        assert_eq!(back, q);
        let err = serde_json::from_str::<QueueName>("\"Bad Name\"").unwrap_err();
        assert!(err.to_string().contains("invalid queue name"), "{err}");
    }

    #[test]
    fn built_in_kinds_convert_and_compare_as_their_names() {
        for kind in JobKind::ALL {
            let q = QueueName::from(kind);
            assert_eq!(q.as_str(), kind.as_str());
            assert_eq!(q, kind);
            assert_eq!(q, kind.as_str().parse::<QueueName>().unwrap());
            assert_eq!(q.job_kind(), Some(kind));
        }
        assert_eq!("ocr.v2".parse::<QueueName>().unwrap().job_kind(), None);
        let mut set = std::collections::HashSet::new();
        set.insert(QueueName::from(JobKind::Embed));
        assert!(set.contains("embed"));
        assert!(set.contains(&"embed".parse::<QueueName>().unwrap()));
    }

    #[test]
    fn static_names_are_checked_like_parsed_ones() {
        const OCR: QueueName = QueueName::from_static("ocr.v2");
        assert_eq!(OCR, "ocr.v2".parse::<QueueName>().unwrap());
        assert_eq!(OCR.label().as_ref(), "ocr.v2");
        assert!(std::panic::catch_unwind(|| QueueName::from_static("Bad")).is_err());
        assert!(std::panic::catch_unwind(|| QueueName::from_static(".x")).is_err());
    }

    #[test]
    fn env_suffix_upper_cases_and_replaces_dots_and_dashes() {
        let q: QueueName = "ocr.v2-fast_x".parse().unwrap();
        assert_eq!(q.env_suffix(), "OCR_V2_FAST_X");
    }
}
