//! Live views of conversations on this node: the customer's chat socket watching its conversation,
//! and (with the inbox) agents watching a workspace. Every node listens to the bus's conversation
//! notices (`live.*.conversations`, sent by whichever node changed a conversation) and hands each
//! to the views here that watch it; a view reads what changed from the store.
//!
//! Watchers are kept by key, so a notice wakes only the sockets that watch its conversation or
//! workspace, however many thousand chats are open on the node.

use crossline_core::ConversationStatus;
use crossline_engine::agents::ConversationNotice;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// Notices a slow watcher may fall behind by before it is told it lagged (it then reads again).
const WATCHER_BUFFER: usize = 64;
/// Keys kept before those nobody watches any more are forgotten.
const MAX_IDLE_KEYS: usize = 10_000;

/// The node's live views.
#[derive(Default)]
pub struct LiveConversations {
    watchers: Mutex<HashMap<String, broadcast::Sender<Arc<ConversationNotice>>>>,
    /// Workspaces whose conversations changed since the router last looked.
    dirty: Mutex<HashSet<String>>,
    /// Wakes the router.
    wake: Notify,
    /// Open inbox sockets per agent (`workspace/agent`) on this node.
    present: Mutex<HashMap<String, usize>>,
    /// When each agent's inbox was last heard of on any node (presence notices).
    heard: Mutex<HashMap<String, std::time::Instant>>,
}

/// "This agent has the inbox open", sent by the node holding the socket every few seconds.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Presence {
    /// The workspace.
    pub workspace_id: String,
    /// The agent.
    pub agent_id: String,
}

/// Tell every node an agent has the inbox open here.
pub async fn announce_presence(bus: &crossline_bus::DynBus, workspace_id: &str, agent_id: &str) {
    let presence = Presence { workspace_id: workspace_id.to_owned(), agent_id: agent_id.to_owned() };
    let payload = serde_json::to_vec(&presence).expect("presence serialises");
    if let Err(err) = bus.notify(&format!("live.{workspace_id}.presence"), payload.into()).await {
        tracing::warn!(error = %err, "a presence notice could not be sent");
    }
}

fn conversation_key(workspace_id: &str, conversation_id: &str) -> String {
    format!("c/{workspace_id}/{conversation_id}")
}

fn workspace_key(workspace_id: &str) -> String {
    format!("w/{workspace_id}")
}

impl LiveConversations {
    /// Watch one conversation.
    pub fn watch_conversation(
        &self,
        workspace_id: &str,
        conversation_id: &str,
    ) -> broadcast::Receiver<Arc<ConversationNotice>> {
        self.watch(conversation_key(workspace_id, conversation_id))
    }

    /// Watch every conversation of a workspace.
    pub fn watch_workspace(&self, workspace_id: &str) -> broadcast::Receiver<Arc<ConversationNotice>> {
        self.watch(workspace_key(workspace_id))
    }

    fn watch(&self, key: String) -> broadcast::Receiver<Arc<ConversationNotice>> {
        let mut watchers = self.watchers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if watchers.len() > MAX_IDLE_KEYS {
            watchers.retain(|_, sender| sender.receiver_count() > 0);
        }
        watchers.entry(key).or_insert_with(|| broadcast::channel(WATCHER_BUFFER).0).subscribe()
    }

    /// An agent opened the inbox on this node.
    pub fn agent_arrived(&self, workspace_id: &str, agent_id: &str) {
        let mut present = self.present.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *present.entry(format!("{workspace_id}/{agent_id}")).or_default() += 1;
    }

    /// An agent's inbox socket closed; true when it was their last on this node.
    pub fn agent_left(&self, workspace_id: &str, agent_id: &str) -> bool {
        let mut present = self.present.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = format!("{workspace_id}/{agent_id}");
        let count = present.entry(key.clone()).or_default();
        *count = count.saturating_sub(1);
        let gone = *count == 0;
        if gone {
            present.remove(&key);
        }
        gone
    }

    /// Whether an agent has the inbox open on this node, or another node said so within `within`.
    pub fn agent_present(&self, workspace_id: &str, agent_id: &str, within: std::time::Duration) -> bool {
        let key = format!("{workspace_id}/{agent_id}");
        let here = self
            .present
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&key)
            .is_some_and(|count| *count > 0);
        here || self
            .heard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&key)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// A presence notice arrived.
    fn seen(&self, workspace_id: &str, agent_id: &str) {
        let mut heard = self.heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if heard.len() > MAX_IDLE_KEYS {
            heard.retain(|_, at| at.elapsed() < Duration::from_secs(3600));
        }
        heard.insert(format!("{workspace_id}/{agent_id}"), std::time::Instant::now());
    }

    /// Ask the router to look at a workspace now (a conversation waits, an agent has room).
    pub fn nudge_router(&self, workspace_id: &str) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if dirty.len() < MAX_IDLE_KEYS {
            dirty.insert(workspace_id.to_owned());
        }
        drop(dirty);
        self.wake.notify_one();
    }

    /// Hand a notice to those watching its conversation or its workspace (and to the router when the
    /// change can route something: a conversation waits, or an agent's room opened by a resolve or a
    /// hand-back — not a message in a conversation an agent holds, the busiest notice).
    pub fn deliver(&self, notice: ConversationNotice) {
        if notice.typing.is_none() && notice.status != ConversationStatus::Assigned {
            self.nudge_router(&notice.workspace_id);
        }
        let notice = Arc::new(notice);
        let mut watchers = self.watchers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in
            [conversation_key(&notice.workspace_id, &notice.conversation_id), workspace_key(&notice.workspace_id)]
        {
            if let Some(sender) = watchers.get(&key)
                && sender.send(notice.clone()).is_err()
            {
                // Nobody watches it any more.
                watchers.remove(&key);
            }
        }
    }

    /// Listen to the bus's notices until `shutdown`, handing each to the watchers here; listens
    /// again after the bus drops the subscription.
    pub async fn run(self: Arc<Self>, bus: crossline_bus::DynBus, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let mut notices = match bus.listen("live.>").await {
                Ok(notices) => notices,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen to conversation notices; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let message = tokio::select! {
                    _ = &mut shutdown => return,
                    message = notices.next() => message,
                };
                let Some(message) = message else { break };
                if message.subject.ends_with(".presence") {
                    if let Ok(presence) = serde_json::from_slice::<Presence>(&message.payload) {
                        self.seen(&presence.workspace_id, &presence.agent_id);
                    }
                    continue;
                }
                match serde_json::from_slice::<ConversationNotice>(&message.payload) {
                    Ok(notice) => self.deliver(notice),
                    Err(err) => tracing::warn!(error = %err, "a conversation notice could not be read"),
                }
            }
            tracing::warn!("the bus ended the conversation notices; listening again");
        }
    }
}

/// How often every workspace is routed, besides the nudges (a missed notice, an agent whose room
/// came from a conversation another node resolved).
const ROUTE_SWEEP: Duration = Duration::from_secs(5);
/// How soon a pass another node held up is tried again.
const ROUTE_RETRY: Duration = Duration::from_millis(100);

/// Route waiting conversations to available agents ([`crossline_engine::agents::ContactCentre::route`]):
/// a workspace at once when nudged, and every workspace every few seconds, until `shutdown`.
pub async fn run_router(state: crate::state::AppState, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = state.live.wake.notified() => {}
            _ = tokio::time::sleep_until(last_sweep + ROUTE_SWEEP) => {}
        }
        let mut workspaces: Vec<String> =
            std::mem::take(&mut *state.live.dirty.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
                .into_iter()
                .collect();
        if last_sweep.elapsed() >= ROUTE_SWEEP {
            last_sweep = tokio::time::Instant::now();
            match state.store.workspaces().await {
                Ok(all) => workspaces = all.into_iter().map(|workspace| workspace.id).collect(),
                Err(err) => tracing::warn!(error = %err, "the router cannot list workspaces"),
            }
        }
        let mut busy = false;
        for workspace_id in workspaces {
            match state.contact_centre.route(&workspace_id, chrono::Utc::now()).await {
                Ok(_) => {}
                // Another node's pass is under way: ours runs again in a moment, after it.
                Err(crossline_engine::agents::AgentError::Busy) => {
                    busy = true;
                    state.live.dirty.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(workspace_id);
                }
                Err(err) => tracing::warn!(error = %err, workspace = %workspace_id, "routing failed"),
            }
        }
        if busy {
            tokio::time::sleep(ROUTE_RETRY).await;
            state.live.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(workspace: &str, conversation: &str) -> ConversationNotice {
        ConversationNotice {
            workspace_id: workspace.into(),
            conversation_id: conversation.into(),
            profile_id: "prf_1".into(),
            status: ConversationStatus::Assigned,
            assignee: None,
            queue: None,
            channel: "chat".into(),
            typing: None,
        }
    }

    #[test]
    fn a_notice_reaches_only_who_watches_it() {
        let live = LiveConversations::default();
        let mut mine = live.watch_conversation("ws1", "cnv_1");
        let mut other = live.watch_conversation("ws1", "cnv_2");
        let mut inbox = live.watch_workspace("ws1");
        let mut elsewhere = live.watch_workspace("ws2");
        live.deliver(notice("ws1", "cnv_1"));
        assert_eq!(mine.try_recv().unwrap().conversation_id, "cnv_1");
        assert_eq!(inbox.try_recv().unwrap().conversation_id, "cnv_1");
        assert!(other.try_recv().is_err());
        assert!(elsewhere.try_recv().is_err());
        drop(mine);
        live.deliver(notice("ws1", "cnv_1"));
        assert!(!live.watchers.lock().unwrap().contains_key("c/ws1/cnv_1"), "forgotten once nobody watches");
    }
}
