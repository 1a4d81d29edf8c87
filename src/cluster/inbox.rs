//! Tensors received on a connection, held until the job that needs them
//! claims them (streams and control messages arrive in any order).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;
use transport::TileHeader;

/// Most received tensor bytes held for jobs that have not claimed them.
const INBOX_BYTES: usize = 2 << 30;

/// A received tensor: its header and its elements.
pub type Received = (TileHeader, Vec<f32>);

/// Tensors received but not yet claimed by a job, keyed by (job, block, index).
#[derive(Default)]
pub struct Inbox {
    items: Mutex<HashMap<(u64, u32, u32), Received>>,
    bytes: AtomicUsize,
    arrived: Notify,
    /// Jobs given up on, newest last: their late tensors are dropped on arrival.
    forgotten: Mutex<std::collections::VecDeque<u64>>,
}

/// Given-up jobs remembered for dropping late tensors.
const FORGOTTEN: usize = 1024;

impl Inbox {
    /// Drops everything held for `job` (a job that was given up on).
    pub fn forget(&self, job: u64) {
        {
            let mut f = lock(&self.forgotten);
            f.push_back(job);
            if f.len() > FORGOTTEN {
                f.pop_front();
            }
        }
        let mut items = lock(&self.items);
        let before: usize = items.values().map(|x| x.1.len() * 4).sum();
        items.retain(|k, _| k.0 != job);
        let after: usize = items.values().map(|x| x.1.len() * 4).sum();
        self.bytes.fetch_sub(before - after, Ordering::Relaxed);
    }

    /// Holds a tensor; false (dropped) if the inbox is full.
    pub fn put(&self, h: TileHeader, data: Vec<f32>) -> bool {
        let len = data.len() * 4;
        if lock(&self.forgotten).contains(&h.key.request_id) {
            return true;
        }
        if self.bytes.load(Ordering::Relaxed) + len > INBOX_BYTES {
            return false;
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        let key = (h.key.request_id, h.key.block_id, h.key.tile_id);
        // A peer that sends one key twice replaces it: count the bytes once.
        if let Some(old) = lock(&self.items).insert(key, (h, data)) {
            self.bytes.fetch_sub(old.1.len() * 4, Ordering::Relaxed);
        }
        self.arrived.notify_waiters();
        true
    }

    /// Waits until the tensor with `key` has arrived, leaving it held; false
    /// if it has not by `deadline`.
    pub async fn wait_for(&self, key: (u64, u32, u32), deadline: Instant) -> bool {
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.items).contains_key(&key) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Waits for the tensor with `key` until `deadline`.
    pub async fn take(&self, key: (u64, u32, u32), deadline: Instant) -> Option<Received> {
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(x) = lock(&self.items).remove(&key) {
                self.bytes.fetch_sub(x.1.len() * 4, Ordering::Relaxed);
                return Some(x);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::tensor_header;

    fn held(inbox: &Inbox) -> usize {
        inbox.bytes.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_key_sent_twice_is_counted_once_and_forget_frees_it() {
        let inbox = Inbox::default();
        let h = tensor_header(7, 0, 0, &[1, 1, 2, 2]);
        assert!(inbox.put(h.clone(), vec![0.0; 4]));
        assert!(inbox.put(h.clone(), vec![1.0; 4]));
        assert_eq!(held(&inbox), 16);
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        let (_, data) = inbox.take((7, 0, 0), deadline).await.expect("held");
        assert_eq!((data, held(&inbox)), (vec![1.0; 4], 0));
        assert!(inbox.put(tensor_header(8, 0, 1, &[1, 1, 1, 3]), vec![2.0; 3]));
        inbox.forget(8);
        assert_eq!(held(&inbox), 0);
        // A late tensor of a forgotten job is dropped on arrival.
        assert!(inbox.put(tensor_header(8, 0, 2, &[1, 1, 1, 1]), vec![3.0]));
        assert_eq!(held(&inbox), 0);
    }
}
