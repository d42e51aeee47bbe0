//! The NATS JetStream bus, for several nodes. Every subject lives under a prefix in one stream;
//! publishing waits for JetStream's acknowledgement, so a published message is stored.

use crate::{BusError, BusMessage, BusResult, Delivery, DurableConfig, DurableConsumer, EventBus, Subscription};
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

/// The JetStream bus.
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: String,
    prefix: String,
}

fn backend<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> BusError {
    move |err| BusError::Backend(format!("{context}: {err}"))
}

impl NatsBus {
    /// Connect, and create the stream `stream` holding subjects `prefix.>` if it does not exist.
    pub async fn connect(url: &str, stream: &str, prefix: &str) -> BusResult<Self> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|err| BusError::Backend(format!("cannot connect to NATS at {url}: {err}")))?;
        let jetstream = jetstream::new(client.clone());
        jetstream
            .get_or_create_stream(stream::Config {
                name: stream.to_owned(),
                subjects: vec![format!("{prefix}.>")],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                max_age: Duration::from_secs(7 * 24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|err| {
                BusError::Backend(format!(
                    "cannot create JetStream stream {stream} (is JetStream enabled, -js?): {err}"
                ))
            })?;
        Ok(NatsBus { client, jetstream, stream: stream.to_owned(), prefix: prefix.to_owned() })
    }

    fn full(&self, subject: &str) -> String {
        format!("{}.{subject}", self.prefix)
    }

    /// Where notices travel: beside the stream's subjects, not under them.
    fn notice_subject(&self, subject: &str) -> String {
        format!("{}_notice.{subject}", self.prefix)
    }

    fn strip(prefix: &str, subject: &str) -> String {
        subject.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.')).unwrap_or(subject).to_owned()
    }

    /// Delete the stream (tests use one stream each).
    pub async fn delete_stream(&self) -> BusResult<()> {
        self.jetstream.delete_stream(&self.stream).await.map_err(backend("delete stream"))?;
        Ok(())
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, subject: &str, message_id: Option<&str>, payload: Bytes) -> BusResult<()> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = message_id {
            headers.insert("Nats-Msg-Id", id);
        }
        self.jetstream
            .publish_with_headers(self.full(subject), headers, payload)
            .await
            .map_err(backend("publish"))?
            .await
            .map_err(backend("publish acknowledgement"))?;
        Ok(())
    }

    async fn subscribe(&self, filter: &str) -> BusResult<Subscription> {
        let mut subscriber = self.client.subscribe(self.full(filter)).await.map_err(backend("subscribe"))?;
        let (sender, receiver) = mpsc::channel(4096);
        let prefix = self.prefix.clone();
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let message = BusMessage { subject: Self::strip(&prefix, &message.subject), payload: message.payload };
                if sender.send(message).await.is_err() {
                    break;
                }
            }
        });
        Ok(Subscription::new(receiver))
    }

    async fn notify(&self, subject: &str, payload: Bytes) -> BusResult<()> {
        // Core NATS, outside the stream's subjects: JetStream keeps none of it.
        self.client.publish(self.notice_subject(subject), payload).await.map_err(backend("notify"))
    }

    async fn listen(&self, filter: &str) -> BusResult<Subscription> {
        let mut subscriber = self.client.subscribe(self.notice_subject(filter)).await.map_err(backend("listen"))?;
        let (sender, receiver) = mpsc::channel(4096);
        let prefix = format!("{}_notice", self.prefix);
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let message = BusMessage { subject: Self::strip(&prefix, &message.subject), payload: message.payload };
                if sender.send(message).await.is_err() {
                    break;
                }
            }
        });
        Ok(Subscription::new(receiver))
    }

    async fn durable(&self, config: &DurableConfig) -> BusResult<Box<dyn DurableConsumer>> {
        let stream = self.jetstream.get_stream(&self.stream).await.map_err(backend("get stream"))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &config.name,
                consumer::pull::Config {
                    durable_name: Some(config.name.clone()),
                    filter_subject: self.full(&config.filter),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    deliver_policy: consumer::DeliverPolicy::New,
                    ..Default::default()
                },
            )
            .await
            .map_err(backend("create consumer"))?;
        let messages = consumer.messages().await.map_err(backend("consume"))?;
        Ok(Box::new(NatsConsumer { messages, prefix: self.prefix.clone() }))
    }

    fn backend(&self) -> &'static str {
        "nats"
    }
}

struct NatsConsumer {
    messages: consumer::pull::Stream,
    prefix: String,
}

#[async_trait]
impl DurableConsumer for NatsConsumer {
    async fn next(&mut self) -> BusResult<Box<dyn Delivery>> {
        let message = self.messages.next().await.ok_or(BusError::Closed)?.map_err(backend("receive"))?;
        let deliveries = message.info().map(|info| info.delivered as u64).unwrap_or(1);
        let bus_message =
            BusMessage { subject: NatsBus::strip(&self.prefix, &message.subject), payload: message.payload.clone() };
        Ok(Box::new(NatsDelivery { message, bus_message, deliveries }))
    }
}

struct NatsDelivery {
    message: jetstream::Message,
    bus_message: BusMessage,
    deliveries: u64,
}

#[async_trait]
impl Delivery for NatsDelivery {
    fn message(&self) -> &BusMessage {
        &self.bus_message
    }

    fn delivery_count(&self) -> u64 {
        self.deliveries
    }

    async fn ack(self: Box<Self>) -> BusResult<()> {
        // Double ack: wait until the server has recorded it, so a crash right after cannot redeliver.
        self.message.double_ack().await.map_err(backend("ack"))
    }

    async fn nack(self: Box<Self>, delay: Duration) -> BusResult<()> {
        self.message.ack_with(jetstream::AckKind::Nak(Some(delay))).await.map_err(backend("nak"))
    }
}

/// Delete every stream whose name starts with `prefix` (tests clear earlier runs' streams with it).
pub async fn remove_streams(url: &str, prefix: &str) {
    let Ok(client) = async_nats::connect(url).await else {
        return;
    };
    let context = jetstream::new(client);
    let names: Vec<String> = context.stream_names().filter_map(|name| async move { name.ok() }).collect().await;
    for name in names.into_iter().filter(|name| name.starts_with(prefix)) {
        let _ = context.delete_stream(&name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs when `CROSSLINE_TEST_NATS_URL` is set (CI always sets it); says so when it is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_bus_passes_the_conformance_suite() {
        let Ok(url) = std::env::var("CROSSLINE_TEST_NATS_URL") else {
            eprintln!("CROSSLINE_TEST_NATS_URL is not set: the NATS JetStream conformance suite did not run");
            return;
        };
        remove_streams(&url, "CONFORMANCE_").await;
        let run = std::process::id();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        crate::testsuite::run_all(|| {
            let index = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let url = url.clone();
            async move {
                let name = format!("CONFORMANCE_{run}_{index}");
                let bus = NatsBus::connect(&url, &name, &format!("conf{run}x{index}")).await.expect("NATS reachable");
                Arc::new(bus) as crate::DynBus
            }
        })
        .await;
    }
}
