//! A bounded set of recently received tile keys, so a tile re-sent after a
//! lost Ack is acknowledged again but not handed to the executor twice.

use std::collections::{HashSet, VecDeque};

use crate::messages::TileKey;

/// Remembers the last `capacity` keys (oldest forgotten first).
#[derive(Debug)]
pub struct DedupSet {
    seen: HashSet<(TileKey, bool)>,
    order: VecDeque<(TileKey, bool)>,
    capacity: usize,
}

impl DedupSet {
    /// An empty set remembering up to `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records `key` (with whether it is a result); returns false if it was already present.
    pub fn insert(&mut self, key: TileKey, result: bool) -> bool {
        if !self.seen.insert((key, result)) {
            return false;
        }
        self.order.push_back((key, result));
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    /// Whether `key` (with whether it is a result) is remembered.
    pub fn contains(&self, key: TileKey, result: bool) -> bool {
        self.seen.contains(&(key, result))
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: u32) -> TileKey {
        TileKey {
            request_id: 7,
            block_id: 1,
            tile_id: t,
        }
    }

    #[test]
    fn rejects_repeats_and_forgets_oldest() {
        let mut d = DedupSet::new(3);
        assert!(d.insert(key(1), false));
        assert!(!d.insert(key(1), false));
        assert!(
            d.insert(key(1), true),
            "a result is a different frame from its tile"
        );
        assert!(d.insert(key(2), false));
        assert!(d.insert(key(3), false));
        assert_eq!(d.len(), 3);
        // key(1)/false was evicted first.
        assert!(d.insert(key(1), false));
        assert!(!d.insert(key(3), false));
    }
}
