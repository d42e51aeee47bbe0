//! The in-process bus, for the embedded single-node mode. Durable consumers live as long as the
//! process: after a restart, work that must survive it is in the store's job queue, not here.

use crate::{
    BusError, BusMessage, BusResult, Delivery, DurableConfig, DurableConsumer, EventBus, Subscription, subject_matches,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// How many recent message ids are remembered for deduplication.
const DEDUP_WINDOW: usize = 100_000;

/// The in-process bus.
#[derive(Default)]
pub struct MemoryBus {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Vec<(String, mpsc::Sender<BusMessage>)>,
    /// Those listening to notices.
    listeners: Vec<(String, mpsc::Sender<BusMessage>)>,
    durables: HashMap<String, Arc<DurableQueue>>,
    recent_ids: HashSet<String>,
    recent_order: VecDeque<String>,
}

struct DurableQueue {
    filter: String,
    ack_wait: Duration,
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Pending>,
    in_flight: HashMap<u64, (Pending, Instant)>,
    next_id: u64,
}

struct Pending {
    message: BusMessage,
    deliveries: u64,
    not_before: Option<Instant>,
}

/// Hand a message to the subscribers whose filter matches (forgetting those gone); one too slow
/// to keep up misses it.
fn fan_out(subscribers: &mut Vec<(String, mpsc::Sender<BusMessage>)>, message: &BusMessage) {
    let subject = message.subject.as_str();
    subscribers.retain(|(filter, sender)| {
        if !subject_matches(filter, subject) {
            return !sender.is_closed();
        }
        match sender.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(subject, "a live subscriber is too slow; message dropped for it");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

impl MemoryBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, subject: &str, message_id: Option<&str>, payload: Bytes) -> BusResult<()> {
        let message = BusMessage { subject: subject.to_owned(), payload };
        let mut inner = self.inner.lock().expect("bus lock");
        if let Some(id) = message_id {
            if !inner.recent_ids.insert(id.to_owned()) {
                return Ok(());
            }
            inner.recent_order.push_back(id.to_owned());
            if inner.recent_order.len() > DEDUP_WINDOW
                && let Some(oldest) = inner.recent_order.pop_front()
            {
                inner.recent_ids.remove(&oldest);
            }
        }
        fan_out(&mut inner.live, &message);
        for queue in inner.durables.values() {
            if subject_matches(&queue.filter, subject) {
                queue.state.lock().expect("queue lock").ready.push_back(Pending {
                    message: message.clone(),
                    deliveries: 0,
                    not_before: None,
                });
                queue.notify.notify_one();
            }
        }
        Ok(())
    }

    async fn subscribe(&self, filter: &str) -> BusResult<Subscription> {
        let (sender, receiver) = mpsc::channel(4096);
        self.inner.lock().expect("bus lock").live.push((filter.to_owned(), sender));
        Ok(Subscription::new(receiver))
    }

    async fn notify(&self, subject: &str, payload: Bytes) -> BusResult<()> {
        let message = BusMessage { subject: subject.to_owned(), payload };
        fan_out(&mut self.inner.lock().expect("bus lock").listeners, &message);
        Ok(())
    }

    async fn listen(&self, filter: &str) -> BusResult<Subscription> {
        let (sender, receiver) = mpsc::channel(4096);
        self.inner.lock().expect("bus lock").listeners.push((filter.to_owned(), sender));
        Ok(Subscription::new(receiver))
    }

    async fn durable(&self, config: &DurableConfig) -> BusResult<Box<dyn DurableConsumer>> {
        let mut inner = self.inner.lock().expect("bus lock");
        let queue = inner
            .durables
            .entry(config.name.clone())
            .or_insert_with(|| {
                Arc::new(DurableQueue {
                    filter: config.filter.clone(),
                    ack_wait: config.ack_wait,
                    state: Mutex::new(QueueState::default()),
                    notify: Notify::new(),
                })
            })
            .clone();
        Ok(Box::new(MemoryConsumer { queue }))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

struct MemoryConsumer {
    queue: Arc<DurableQueue>,
}

#[async_trait]
impl DurableConsumer for MemoryConsumer {
    async fn next(&mut self) -> BusResult<Box<dyn Delivery>> {
        loop {
            let wake_at = {
                let mut state = self.queue.state.lock().expect("queue lock");
                let now = Instant::now();
                // Deliveries not acknowledged in time go back to the front of the line.
                let expired: Vec<u64> =
                    state.in_flight.iter().filter(|(_, (_, deadline))| *deadline <= now).map(|(id, _)| *id).collect();
                for id in expired {
                    if let Some((pending, _)) = state.in_flight.remove(&id) {
                        state.ready.push_front(pending);
                    }
                }
                if let Some(position) =
                    state.ready.iter().position(|pending| pending.not_before.is_none_or(|at| at <= now))
                {
                    let mut pending = state.ready.remove(position).expect("position is in range");
                    pending.deliveries += 1;
                    pending.not_before = None;
                    let id = state.next_id;
                    state.next_id += 1;
                    let delivery = MemoryDelivery {
                        queue: self.queue.clone(),
                        id,
                        message: pending.message.clone(),
                        deliveries: pending.deliveries,
                    };
                    state.in_flight.insert(id, (pending, now + self.queue.ack_wait));
                    if !state.ready.is_empty() {
                        self.queue.notify.notify_one();
                    }
                    return Ok(Box::new(delivery));
                }
                let next_ready = state.ready.iter().filter_map(|pending| pending.not_before).min();
                let next_expiry = state.in_flight.values().map(|(_, deadline)| *deadline).min();
                next_ready.into_iter().chain(next_expiry).min()
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = self.queue.notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.queue.notify.notified().await,
            }
        }
    }
}

struct MemoryDelivery {
    queue: Arc<DurableQueue>,
    id: u64,
    message: BusMessage,
    deliveries: u64,
}

#[async_trait]
impl Delivery for MemoryDelivery {
    fn message(&self) -> &BusMessage {
        &self.message
    }

    fn delivery_count(&self) -> u64 {
        self.deliveries
    }

    async fn ack(self: Box<Self>) -> BusResult<()> {
        self.queue.state.lock().map_err(|_| BusError::Closed)?.in_flight.remove(&self.id);
        Ok(())
    }

    async fn nack(self: Box<Self>, delay: Duration) -> BusResult<()> {
        let mut state = self.queue.state.lock().map_err(|_| BusError::Closed)?;
        if let Some((mut pending, _)) = state.in_flight.remove(&self.id) {
            pending.not_before = Some(Instant::now() + delay);
            state.ready.push_front(pending);
        }
        drop(state);
        self.queue.notify.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_bus_passes_the_conformance_suite() {
        crate::testsuite::run_all(|| async { std::sync::Arc::new(super::MemoryBus::new()) as crate::DynBus }).await;
    }
}
