//! The conformance suite every bus passes.

#![allow(missing_docs)]

use crate::{DurableConfig, DynBus};
use bytes::Bytes;
use std::future::Future;
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn config(name: &str, filter: &str) -> DurableConfig {
    DurableConfig { name: name.into(), filter: filter.into(), ack_wait: Duration::from_secs(30) }
}

/// Run every conformance test, each on a fresh bus.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    live_subscribers_get_matching_messages(fresh().await).await;
    durable_consumers_get_everything_until_acked(fresh().await).await;
    consumers_sharing_a_name_share_the_work(fresh().await).await;
    message_ids_deduplicate(fresh().await).await;
    notices_reach_listeners_and_no_durable_consumer(fresh().await).await;
}

async fn live_subscribers_get_matching_messages(bus: DynBus) {
    let mut tracks = bus.subscribe("events.*.track").await.unwrap();
    let mut everything = bus.subscribe("events.>").await.unwrap();
    bus.publish("events.ws1.page", None, Bytes::from_static(b"p")).await.unwrap();
    bus.publish("events.ws1.track", None, Bytes::from_static(b"t")).await.unwrap();
    let first = timeout(WAIT, tracks.next()).await.unwrap().unwrap();
    assert_eq!((first.subject.as_str(), &first.payload[..]), ("events.ws1.track", &b"t"[..]));
    let a = timeout(WAIT, everything.next()).await.unwrap().unwrap();
    let b = timeout(WAIT, everything.next()).await.unwrap().unwrap();
    assert_eq!((a.subject.as_str(), b.subject.as_str()), ("events.ws1.page", "events.ws1.track"));
}

async fn durable_consumers_get_everything_until_acked(bus: DynBus) {
    let mut consumer = bus.durable(&config("worker", "jobs.>")).await.unwrap();
    for index in 0..3 {
        bus.publish(&format!("jobs.send.{index}"), None, Bytes::from(format!("job-{index}"))).await.unwrap();
    }
    bus.publish("other.subject", None, Bytes::from_static(b"x")).await.unwrap();
    let first = timeout(WAIT, consumer.next()).await.unwrap().unwrap();
    assert_eq!(&first.message().payload[..], b"job-0");
    assert_eq!(first.delivery_count(), 1);
    first.nack(Duration::from_millis(10)).await.unwrap();
    let mut seen = Vec::new();
    let mut redelivered = false;
    while seen.len() < 3 {
        let delivery = timeout(WAIT, consumer.next()).await.unwrap().unwrap();
        let payload = String::from_utf8(delivery.message().payload.to_vec()).unwrap();
        if payload == "job-0" {
            assert_eq!(delivery.delivery_count(), 2, "a nacked message comes back");
            redelivered = true;
        }
        seen.push(payload);
        delivery.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, ["job-0", "job-1", "job-2"]);
    assert!(redelivered);
    // Acknowledged messages do not come back; new ones do, also to a reopened consumer.
    drop(consumer);
    let mut reopened = bus.durable(&config("worker", "jobs.>")).await.unwrap();
    bus.publish("jobs.send.9", None, Bytes::from_static(b"job-9")).await.unwrap();
    let next = timeout(WAIT, reopened.next()).await.unwrap().unwrap();
    assert_eq!(&next.message().payload[..], b"job-9");
    next.ack().await.unwrap();
}

async fn consumers_sharing_a_name_share_the_work(bus: DynBus) {
    let mut first = bus.durable(&config("shared", "work.>")).await.unwrap();
    let mut second = bus.durable(&config("shared", "work.>")).await.unwrap();
    let mut other = bus.durable(&config("audit", "work.>")).await.unwrap();
    for index in 0..10 {
        bus.publish(&format!("work.{index}"), None, Bytes::from(index.to_string())).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        let delivery = tokio::select! {
            delivery = first.next() => delivery.unwrap(),
            delivery = second.next() => delivery.unwrap(),
            _ = tokio::time::sleep(WAIT) => panic!("only {} of 10 delivered", got.len()),
        };
        got.push(String::from_utf8(delivery.message().payload.to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 10, "each message once across the shared consumer");
    for _ in 0..10 {
        timeout(WAIT, other.next()).await.unwrap().unwrap().ack().await.unwrap();
    }
}

async fn message_ids_deduplicate(bus: DynBus) {
    let mut consumer = bus.durable(&config("dedup", "dedup.>")).await.unwrap();
    bus.publish("dedup.a", Some("id-1"), Bytes::from_static(b"first")).await.unwrap();
    bus.publish("dedup.a", Some("id-1"), Bytes::from_static(b"again")).await.unwrap();
    bus.publish("dedup.a", Some("id-2"), Bytes::from_static(b"second")).await.unwrap();
    let a = timeout(WAIT, consumer.next()).await.unwrap().unwrap();
    assert_eq!(&a.message().payload[..], b"first");
    a.ack().await.unwrap();
    let b = timeout(WAIT, consumer.next()).await.unwrap().unwrap();
    assert_eq!(&b.message().payload[..], b"second", "the republished id-1 was dropped");
    b.ack().await.unwrap();
}

async fn notices_reach_listeners_and_no_durable_consumer(bus: DynBus) {
    let mut durable = bus.durable(&config("notices", "live.>")).await.unwrap();
    let mut one = bus.listen("live.ws1.*").await.unwrap();
    let mut all = bus.listen("live.>").await.unwrap();
    bus.notify("live.ws2.c", Bytes::from_static(b"2")).await.unwrap();
    bus.notify("live.ws1.c", Bytes::from_static(b"1")).await.unwrap();
    let first = timeout(WAIT, one.next()).await.unwrap().unwrap();
    assert_eq!((first.subject.as_str(), &first.payload[..]), ("live.ws1.c", &b"1"[..]));
    let a = timeout(WAIT, all.next()).await.unwrap().unwrap();
    let b = timeout(WAIT, all.next()).await.unwrap().unwrap();
    assert_eq!((a.subject.as_str(), b.subject.as_str()), ("live.ws2.c", "live.ws1.c"));
    assert!(
        timeout(Duration::from_millis(300), durable.next()).await.is_err(),
        "a notice is not stored for durable consumers"
    );
}
