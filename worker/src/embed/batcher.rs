//! Forms batches from the texts waiting for one model: length-sorted and
//! bounded by a token budget.
//!
//! The pool keeps every waiting text sorted by token count. Each forward
//! pass serves the oldest waiting request first: its shortest waiting text
//! anchors the batch, which then grows with the neighbours (in length) that
//! add the least padding, while `batch size × longest ≤ max_tokens` and
//! `batch size ≤ max_batch`. So small jobs share passes, padding stays low,
//! and no request waits behind a stream of newer ones.

use super::tokenize::Tokens;

/// One waiting text.
#[derive(Debug)]
pub(crate) struct Item {
    /// The request it belongs to (ids grow with arrival).
    pub req: u64,
    /// Its position in that request.
    pub index: usize,
    /// Its tokens.
    pub tokens: Tokens,
}

/// The texts waiting for one model, sorted by length.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    items: Vec<Item>,
}

impl Pool {
    /// Number of waiting texts.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Real tokens waiting.
    pub fn tokens(&self) -> usize {
        self.items.iter().map(|i| i.tokens.len()).sum()
    }

    /// The oldest request waiting here.
    pub fn oldest(&self) -> Option<u64> {
        self.items.iter().map(|i| i.req).min()
    }

    /// Adds texts, keeping the pool sorted by length (stable: equal lengths
    /// keep arrival order).
    pub fn add(&mut self, items: impl IntoIterator<Item = Item>) {
        self.items.extend(items);
        self.items.sort_by_key(|i| i.tokens.len());
    }

    /// Drops every text of the requests `gone` says are gone; returns how many.
    pub fn remove_requests(&mut self, gone: impl Fn(u64) -> bool) -> usize {
        let before = self.items.len();
        self.items.retain(|i| !gone(i.req));
        before - self.items.len()
    }

    /// Takes the next batch (see the module doc); empty only when the pool
    /// is. A text joins only while the batch keeps `batch size × longest ≤
    /// max_tokens`, `batch size ≤ max_batch` and padding ≤ `max_padding` ×
    /// its real tokens.
    pub fn next_batch(
        &mut self,
        max_tokens: usize,
        max_batch: usize,
        max_padding: f64,
    ) -> Vec<Item> {
        let Some(oldest) = self.oldest() else {
            return Vec::new();
        };
        let len = |i: usize| self.items[i].tokens.len().max(1);
        // The shortest text of the oldest request.
        let anchor = self.items.iter().position(|i| i.req == oldest).unwrap_or(0);
        let (mut lo, mut hi) = (anchor, anchor + 1);
        let mut longest = len(anchor);
        let mut real = longest;
        let fits = |count: usize, longest: usize, real: usize| {
            count * longest <= max_tokens
                && (count * longest) as f64 <= (1.0 + max_padding) * real as f64
        };
        loop {
            let count = hi - lo;
            if count >= max_batch {
                break;
            }
            // Padding each candidate would add, if it fits.
            let left = (lo > 0 && fits(count + 1, longest, real + len(lo - 1)))
                .then(|| longest - len(lo - 1));
            let right = (hi < self.items.len() && fits(count + 1, len(hi), real + len(hi)))
                .then(|| (len(hi) - longest) * count);
            match (left, right) {
                (Some(l), Some(r)) if l <= r => {
                    lo -= 1;
                    real += len(lo);
                }
                (Some(_), None) => {
                    lo -= 1;
                    real += len(lo);
                }
                (_, Some(_)) => {
                    longest = len(hi);
                    real += longest;
                    hi += 1;
                }
                (None, None) => break,
            }
        }
        self.items.drain(lo..hi).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(req: u64, index: usize, len: usize) -> Item {
        Item {
            req,
            index,
            tokens: Tokens {
                ids: vec![1; len],
                type_ids: vec![0; len],
                truncated: false,
            },
        }
    }

    #[test]
    fn batches_respect_the_token_budget_and_size() {
        let mut p = Pool::default();
        p.add((0..100).map(|i| item(0, i, 10 + i % 50)));
        let mut seen = 0;
        while !p.is_empty() {
            let b = p.next_batch(512, 16, 1.0);
            let longest = b.iter().map(|i| i.tokens.len()).max().unwrap();
            assert!(
                b.len() <= 16 && b.len() * longest <= 512,
                "{} × {longest}",
                b.len()
            );
            seen += b.len();
        }
        assert_eq!(seen, 100);
    }

    #[test]
    fn the_oldest_request_is_served_first_and_padding_stays_low() {
        let mut p = Pool::default();
        p.add((0..40).map(|i| item(2, i, 5 + i)));
        p.add([item(1, 0, 30)]);
        let b = p.next_batch(300, 8, 1.0);
        assert!(b.iter().any(|i| i.req == 1));
        let lens: Vec<_> = b.iter().map(|i| i.tokens.len()).collect();
        assert!(lens.iter().all(|&l| (22..=38).contains(&l)), "{lens:?}");
    }

    #[test]
    fn an_overlong_text_still_gets_a_batch_of_its_own() {
        let mut p = Pool::default();
        p.add([item(0, 0, 600), item(0, 1, 600)]);
        assert_eq!(p.next_batch(256, 8, 1.0).len(), 1);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn padding_is_bounded() {
        let mut p = Pool::default();
        p.add([
            item(0, 0, 10),
            item(0, 1, 11),
            item(0, 2, 40),
            item(0, 3, 41),
        ]);
        let b = p.next_batch(4096, 64, 0.2);
        let lens: Vec<_> = b.iter().map(|i| i.tokens.len()).collect();
        assert_eq!(lens, [10, 11]);
    }
}
