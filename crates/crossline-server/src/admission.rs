//! Fair admission to the store for the tracking API: each workspace may have only so many requests
//! in the store at once; the rest wait their turn in their own queue. The SQLite writer commits
//! requests in the order they reach it, so without this one workspace sending from many clients
//! fills the writer's queue and every other workspace's request waits behind all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests of one workspace in the store at once, by default.
pub const DEFAULT_PER_WORKSPACE: usize = 8;

/// Workspaces whose queues are remembered before idle ones are forgotten.
const REMEMBERED_WORKSPACES: usize = 10_000;

/// Per-workspace admission to the store.
pub struct Admission {
    per_workspace: usize,
    queues: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(DEFAULT_PER_WORKSPACE)
    }
}

impl Admission {
    /// At most `per_workspace` requests of each workspace in the store at once.
    pub fn new(per_workspace: usize) -> Self {
        Admission { per_workspace: per_workspace.max(1), queues: Mutex::new(HashMap::new()) }
    }

    /// Wait for the workspace's turn; the store may be used while the permit lives.
    pub async fn enter(&self, workspace_id: &str) -> OwnedSemaphorePermit {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if queues.len() >= REMEMBERED_WORKSPACES && !queues.contains_key(workspace_id) {
                // Forget the queues nobody waits in or holds.
                queues.retain(|_, queue| Arc::strong_count(queue) > 1);
            }
            queues
                .entry(workspace_id.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_workspace)))
                .clone()
        };
        // The semaphore is never closed.
        queue.acquire_owned().await.expect("admission queues are never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_workspace_waits_and_others_do_not() {
        let admission = Admission::new(2);
        let first = admission.enter("ws_busy").await;
        let _second = admission.enter("ws_busy").await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), admission.enter("ws_busy")).await;
        assert!(third.is_err(), "a third request of the same workspace waits");
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), admission.enter("ws_quiet")).await;
        assert!(quiet.is_ok(), "another workspace goes in at once");
        drop(first);
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), admission.enter("ws_busy")).await;
        assert!(third.is_ok(), "a freed place lets the next one in");
    }
}
