//! What the nodes of a cluster tell one another so that limits hold for the cluster, not per node.
//!
//! Every node sends a notice on the bus every [`ALIVE_EVERY`] (`cluster.notices`: not stored, only heard
//! by the nodes listening now) and counts the nodes it heard from in the last [`FORGOTTEN_AFTER`]. The
//! public rate limits and the per-customer turn budget are shared by that count
//! ([`crossline_engine::rate::ClusterShare`]): each node allows its share, so N nodes together allow
//! the configured rate once. Failed sign-ins are told to every node, so the sign-in throttle closes the
//! door on every node at once. With the in-process bus (one node) none of this leaves the process.

use crate::state::AppState;
use crate::throttle::LoginThrottle;
use crossline_bus::DynBus;
use crossline_engine::rate::ClusterShare;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a node says it is alive.
pub const ALIVE_EVERY: Duration = Duration::from_secs(2);
/// A node not heard of for this long no longer counts.
pub const FORGOTTEN_AFTER: Duration = Duration::from_secs(7);
/// Nodes remembered at most (a flood of made-up node ids cannot grow memory or the count past it).
const MAX_NODES: usize = 256;
const SUBJECT: &str = "cluster.notices";

/// This node's view of the cluster.
pub struct Cluster {
    node: String,
    share: ClusterShare,
    heard: Mutex<HashMap<String, Instant>>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Notice {
    /// The node is up.
    Alive { node: String },
    /// A sign-in failed on the node: count it against these throttle keys everywhere.
    SignInFailed { node: String, keys: Vec<(String, u32)> },
    /// A sign-in from this address succeeded: it starts afresh everywhere.
    SignInSucceeded { node: String, address: String },
}

impl Cluster {
    /// A node's view, alone until it hears of others.
    pub fn new(node: String) -> Self {
        let cluster = Cluster { node, share: ClusterShare::default(), heard: Mutex::new(HashMap::new()) };
        cluster.heard_from(cluster.node.clone(), Instant::now());
        cluster
    }

    /// The share the node's limits are divided by.
    pub fn share(&self) -> &ClusterShare {
        &self.share
    }

    /// The nodes counted now (this one included).
    pub fn nodes(&self) -> usize {
        self.share.nodes()
    }

    fn heard_from(&self, node: String, now: Instant) {
        let mut heard = self.heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if heard.len() < MAX_NODES || heard.contains_key(&node) {
            heard.insert(node, now);
        }
        heard.retain(|_, at| now.saturating_duration_since(*at) < FORGOTTEN_AFTER);
        let nodes = heard.len().max(1);
        drop(heard);
        self.share.set_nodes(nodes);
        metrics::gauge!("crossline_cluster_nodes").set(nodes as f64);
    }

    /// Take a notice another node sent.
    fn heard(&self, notice: Notice, logins: &LoginThrottle, now: Instant) {
        match notice {
            Notice::Alive { node } => self.heard_from(node, now),
            Notice::SignInFailed { node, keys } if node != self.node => {
                logins.failed(&keys, now);
                self.heard_from(node, now);
            }
            Notice::SignInSucceeded { node, address } if node != self.node => {
                logins.succeeded(&address);
                self.heard_from(node, now);
            }
            // This node's own notices: already applied here.
            Notice::SignInFailed { .. } | Notice::SignInSucceeded { .. } => {}
        }
    }

    async fn tell(&self, bus: &DynBus, notice: &Notice) {
        let payload = serde_json::to_vec(notice).expect("cluster notices serialise");
        if let Err(err) = bus.notify(SUBJECT, payload.into()).await {
            tracing::warn!(error = %err, "a cluster notice could not be sent");
        }
    }
}

/// A sign-in failed: count it here and on every other node.
pub async fn sign_in_failed(state: &AppState, keys: &[(String, u32)]) {
    state.logins.failed(keys, Instant::now());
    let notice = Notice::SignInFailed { node: state.cluster.node.clone(), keys: keys.to_vec() };
    state.cluster.tell(&state.bus, &notice).await;
}

/// A sign-in from `address` (its throttle key) succeeded: it starts afresh here and everywhere.
pub async fn sign_in_succeeded(state: &AppState, address: &str) {
    state.logins.succeeded(address);
    let notice = Notice::SignInSucceeded { node: state.cluster.node.clone(), address: address.to_owned() };
    state.cluster.tell(&state.bus, &notice).await;
}

/// Say this node is alive every [`ALIVE_EVERY`] and take the other nodes' notices, until `stop`.
pub async fn run(state: AppState, stop: impl Future<Output = ()>) {
    let mut alive = tokio::time::interval(ALIVE_EVERY);
    tokio::pin!(stop);
    // Listening again whenever the subscription ends (the bus reconnecting): meanwhile the count is
    // still kept up to date (this node's own ticks prune the silent ones).
    let mut notices = None;
    loop {
        if notices.is_none() {
            match state.bus.listen(SUBJECT).await {
                Ok(subscription) => notices = Some(subscription),
                Err(err) => tracing::warn!(error = %err, "cannot hear the other nodes now; trying again"),
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = alive.tick() => {
                let cluster = &state.cluster;
                cluster.heard_from(cluster.node.clone(), Instant::now());
                cluster.tell(&state.bus, &Notice::Alive { node: cluster.node.clone() }).await;
            }
            message = async { notices.as_mut().expect("checked above").next().await }, if notices.is_some() => {
                let Some(message) = message else {
                    notices = None;
                    continue;
                };
                // A notice from an older or newer node that does not parse is ignored.
                if let Ok(notice) = serde_json::from_slice::<Notice>(&message.payload) {
                    state.cluster.heard(notice, &state.logins, Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_nodes_heard_lately_and_shares_sign_in_failures() {
        let cluster = Cluster::new("node_a".into());
        let logins = LoginThrottle::default();
        let start = Instant::now();
        assert_eq!(cluster.nodes(), 1);
        cluster.heard(Notice::Alive { node: "node_b".into() }, &logins, start);
        cluster.heard(Notice::Alive { node: "node_c".into() }, &logins, start + Duration::from_secs(1));
        assert_eq!(cluster.nodes(), 3);
        // Node b falls silent; a and c keep talking.
        let later = start + FORGOTTEN_AFTER + Duration::from_secs(2);
        cluster.heard(Notice::Alive { node: "node_a".into() }, &logins, later);
        cluster.heard(Notice::Alive { node: "node_c".into() }, &logins, later);
        assert_eq!(cluster.nodes(), 2);

        // Another node's failed sign-ins close the door here too.
        let keys = vec![("ip:192.0.2.7".to_owned(), 1)];
        for _ in 0..3 {
            cluster.heard(Notice::SignInFailed { node: "node_c".into(), keys: keys.clone() }, &logins, later);
        }
        assert!(logins.wait(&keys, later).is_some());
        // Its own notices are not counted twice.
        let mine = vec![("ip:192.0.2.8".to_owned(), 1)];
        cluster.heard(Notice::SignInFailed { node: "node_a".into(), keys: mine.clone() }, &logins, later);
        assert!(logins.is_empty() || logins.wait(&mine, later).is_none());
        cluster.heard(
            Notice::SignInSucceeded { node: "node_c".into(), address: "ip:192.0.2.7".into() },
            &logins,
            later,
        );
        assert!(logins.wait(&keys, later).is_none());
    }

    #[test]
    fn made_up_node_ids_cannot_grow_the_count_past_its_bound() {
        let cluster = Cluster::new("node_a".into());
        let logins = LoginThrottle::default();
        let now = Instant::now();
        for index in 0..10_000 {
            cluster.heard(Notice::Alive { node: format!("fake-{index}") }, &logins, now);
        }
        assert_eq!(cluster.nodes(), MAX_NODES);
    }
}
