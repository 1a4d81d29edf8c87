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
pub struct Inbox {
    items: Mutex<HashMap<(u64, u32, u32), Received>>,
    bytes: AtomicUsize,
    capacity: usize,
    arrived: Notify,
    /// Jobs given up on, newest last: their late tensors are dropped on arrival.
    forgotten: Mutex<std::collections::VecDeque<u64>>,
    /// Jobs a tensor of which was dropped for want of room, newest last:
    /// their waits end at once instead of at their deadline.
    overflowed: Mutex<std::collections::VecDeque<u64>>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::with_capacity(INBOX_BYTES)
    }
}

/// Given-up jobs remembered for dropping late tensors.
const FORGOTTEN: usize = 1024;

impl Inbox {
    /// An inbox holding at most `capacity` bytes of unclaimed tensors.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            items: Mutex::default(),
            bytes: AtomicUsize::new(0),
            capacity,
            arrived: Notify::new(),
            forgotten: Mutex::default(),
            overflowed: Mutex::default(),
        }
    }

    /// Why a tensor of `job` that a wait did not get is missing, to follow
    /// its name in a message.
    pub fn why_missing(&self, job: u64) -> String {
        if self.overflowed(job) {
            format!(
                "was dropped: this connection had {} MiB of tensors no job had claimed",
                self.capacity >> 20
            )
        } else {
            "never came".to_string()
        }
    }

    /// Whether a tensor of `job` was dropped for want of room.
    pub fn overflowed(&self, job: u64) -> bool {
        lock(&self.overflowed).contains(&job)
    }

    /// Drops everything held for `job` (a job that was given up on).
    pub fn forget(&self, job: u64) {
        remember(&self.forgotten, job);
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
        if self.bytes.load(Ordering::Relaxed) + len > self.capacity {
            remember(&self.overflowed, h.key.request_id);
            self.arrived.notify_waiters();
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
            if self.overflowed(key.0) {
                return false;
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
            if self.overflowed(key.0) {
                return None;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// Adds `job` to a list of the last [`FORGOTTEN`] jobs.
fn remember(jobs: &Mutex<std::collections::VecDeque<u64>>, job: u64) {
    let mut j = lock(jobs);
    j.push_back(job);
    if j.len() > FORGOTTEN {
        j.pop_front();
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

    /// A tensor dropped for want of room ends its job's wait at once, and
    /// says so; before, the job waited out its deadline (120 s on a node)
    /// and said "never came".
    #[tokio::test]
    async fn a_tensor_dropped_for_room_ends_its_jobs_wait_at_once() {
        let inbox = std::sync::Arc::new(Inbox::with_capacity(16 << 20));
        assert!(inbox.put(
            tensor_header(1, 0, 0, &[1, 1, 1024, 1024]),
            vec![0.0; 1 << 20]
        ));
        assert!(inbox.put(
            tensor_header(1, 0, 1, &[1, 3, 1024, 1024]),
            vec![0.0; 3 << 20]
        ));
        let waiter = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + std::time::Duration::from_secs(60);
                let started = Instant::now();
                let got = inbox.take((2, 0, 0), deadline).await;
                (got.is_some(), started.elapsed())
            })
        };
        tokio::task::yield_now().await;
        assert!(!inbox.put(
            tensor_header(2, 0, 0, &[1, 1, 1024, 1024]),
            vec![0.0; 1 << 20]
        ));
        let (got, waited) = waiter.await.expect("waiter");
        assert!(!got);
        assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
        assert!(
            inbox.why_missing(2).contains("dropped"),
            "{}",
            inbox.why_missing(2)
        );
        assert_eq!(inbox.why_missing(1), "never came");
        // The other job's tensors are still there.
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        assert!(inbox.take((1, 0, 1), deadline).await.is_some());
    }
}
