//! The models a daemon holds, by content hash, within a byte budget: a
//! long-lived node that many coordinators send models to keeps the ones
//! used most recently instead of every model it was ever sent.

use std::collections::HashMap;
use std::sync::Arc;

use tile_engine::ir::Graph;

/// Loaded models, least recently used dropped first past the budget; a
/// model someone else holds (a connection that loaded it, a running job)
/// is not dropped, so no one is sent it twice while it is in memory.
pub struct ModelCache {
    entries: HashMap<String, Entry>,
    bytes: u64,
    budget: u64,
    clock: u64,
}

struct Entry {
    graph: Arc<Graph>,
    bytes: u64,
    used: u64,
}

impl ModelCache {
    /// An empty cache holding at most `budget` bundle bytes (the newest
    /// model stays even when it alone is over).
    pub fn new(budget: u64) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
        }
    }

    /// Whether the model is held.
    pub fn contains(&self, hash: &str) -> bool {
        self.entries.contains_key(hash)
    }

    /// How many models are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no model is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bundle bytes of the models held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The model, marked as used now.
    pub fn get(&mut self, hash: &str) -> Option<Arc<Graph>> {
        self.clock += 1;
        let e = self.entries.get_mut(hash)?;
        e.used = self.clock;
        Some(e.graph.clone())
    }

    /// Holds a model whose bundle was `bytes` long; returns the hashes
    /// dropped to stay within the budget (as far as models no one else
    /// holds allow).
    pub fn insert(&mut self, hash: &str, graph: Arc<Graph>, bytes: u64) -> Vec<String> {
        self.clock += 1;
        let entry = Entry {
            graph,
            bytes,
            used: self.clock,
        };
        if let Some(old) = self.entries.insert(hash.to_string(), entry) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        let mut dropped = Vec::new();
        while self.bytes > self.budget && self.entries.len() > 1 {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(h, e)| h.as_str() != hash && Arc::strong_count(&e.graph) == 1)
                .min_by_key(|(_, e)| e.used)
                .map(|(h, _)| h.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes;
            }
            dropped.push(oldest);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Arc<Graph> {
        Arc::new(Graph::default())
    }

    #[test]
    fn the_least_recently_used_model_goes_first_and_the_newest_stays() {
        let mut c = ModelCache::new(100);
        assert!(c.insert("a", graph(), 40).is_empty());
        assert!(c.insert("b", graph(), 40).is_empty());
        assert!(c.get("a").is_some());
        assert_eq!(c.insert("c", graph(), 40), vec!["b".to_string()]);
        assert!(c.contains("a") && c.contains("c") && !c.contains("b"));
        // One model over the whole budget is kept alone.
        let mut dropped = c.insert("big", graph(), 500);
        dropped.sort();
        assert_eq!(dropped, vec!["a".to_string(), "c".to_string()]);
        assert!(c.contains("big"));
        // Loading the same model again does not count it twice.
        assert!(c.insert("big", graph(), 500).is_empty());
        assert_eq!(c.bytes, 500);
    }

    #[test]
    fn a_model_held_elsewhere_stays_past_the_budget_until_let_go() {
        let mut c = ModelCache::new(100);
        let held = graph();
        assert!(c.insert("a", held.clone(), 60).is_empty());
        assert!(c.insert("b", graph(), 60).is_empty(), "a is in use");
        assert!(c.contains("a") && c.contains("b"));
        drop(held);
        assert_eq!(c.insert("c", graph(), 30), vec!["a".to_string()]);
        assert!(c.contains("b") && c.contains("c"));
    }
}
