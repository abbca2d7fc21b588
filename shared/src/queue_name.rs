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

/// A validated queue name. Compare, hash and order it as its string.
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

    /// The name as a metrics label value: no allocation (a static name or
    /// a shared `Arc<str>`).
    pub fn label(&self) -> metrics::SharedString {
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
