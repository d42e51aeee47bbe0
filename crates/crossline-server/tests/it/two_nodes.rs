//! Two nodes sharing PostgreSQL and NATS JetStream, as in the scaled-out mode. Runs when
//! `CROSSLINE_TEST_DATABASE_URL` and `CROSSLINE_TEST_NATS_URL` are set (CI sets both).

use crate::harness::{TestServer, json_of};
use crossline_bus::DynBus;
use crossline_store::DynStore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn node(database_url: &str, nats_url: &str, schema: &str, stream: &str) -> TestServer {
    let store: DynStore = Arc::new(
        crossline_store::postgres::PgStore::connect_in_schema(database_url, Some(schema))
            .await
            .expect("PostgreSQL reachable"),
    );
    let bus: DynBus = Arc::new(
        crossline_bus::nats::NatsBus::connect(nats_url, stream, &stream.to_lowercase()).await.expect("NATS reachable"),
    );
    TestServer::start_with(store, bus).await
}

/// Two nodes on a fresh schema and stream of the test services, or None (said on stderr) when
/// `CROSSLINE_TEST_DATABASE_URL` and `CROSSLINE_TEST_NATS_URL` are not both set.
async fn two_nodes(test: &str) -> Option<(TestServer, TestServer)> {
    let (Ok(database_url), Ok(nats_url)) =
        (std::env::var("CROSSLINE_TEST_DATABASE_URL"), std::env::var("CROSSLINE_TEST_NATS_URL"))
    else {
        eprintln!("CROSSLINE_TEST_DATABASE_URL and CROSSLINE_TEST_NATS_URL are not both set: {test} did not run");
        return None;
    };
    // Not under `two_nodes_`, which the first test clears while these may run.
    let prefix = format!("cluster_{test}_");
    crossline_store::postgres::drop_schemas(&database_url, &prefix).await;
    crossline_bus::nats::remove_streams(&nats_url, &prefix.to_uppercase()).await;
    let run = format!("{}_{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let schema = format!("{prefix}{run}");
    let stream = schema.to_uppercase();
    let a = node(&database_url, &nats_url, &schema, &stream).await;
    let b = node(&database_url, &nats_url, &schema, &stream).await;
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_through_one_node_is_seen_through_the_other() {
    let (Ok(database_url), Ok(nats_url)) =
        (std::env::var("CROSSLINE_TEST_DATABASE_URL"), std::env::var("CROSSLINE_TEST_NATS_URL"))
    else {
        eprintln!(
            "CROSSLINE_TEST_DATABASE_URL and CROSSLINE_TEST_NATS_URL are not both set: the two-node test did not run"
        );
        return;
    };
    crossline_store::postgres::drop_schemas(&database_url, "two_nodes_").await;
    crossline_bus::nats::remove_streams(&nats_url, "TWONODES_").await;
    let run = format!("{}_{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let schema = format!("two_nodes_{run}");
    let stream = format!("TWONODES_{run}");
    let a = node(&database_url, &nats_url, &schema, &stream).await;
    let b = node(&database_url, &nats_url, &schema, &stream).await;
    let ws = a.workspace("shared").await;
    let mut on_a = a.bus.subscribe(&format!("events.{}", ws.id)).await.unwrap();

    let web = json!({"anonymousId": "web-9", "traits": {"email": "lin@example.com"}, "context": {"channel": "web"}});
    let sms = json!({"anonymousId": "sms-9", "event": "SMS Replied", "context": {"channel": "sms", "traits": {"phone": "+14155550177"}}});
    assert_eq!(a.track("/v1/identify", &ws.write_key, &web).await.status(), StatusCode::OK);
    assert_eq!(
        b.track("/v1/track", &ws.write_key, &sms).await.status(),
        StatusCode::OK,
        "the workspace's key works on every node"
    );
    let published = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let message = on_a.next().await.unwrap();
            let payload: Value = serde_json::from_slice(&message.payload).unwrap();
            if payload["events"][0]["type"] == "track" {
                break payload;
            }
        }
    })
    .await
    .expect("node A hears node B's events over NATS");
    assert_eq!(published["events"][0]["channel"], "sms");

    let join = json!({"userId": "lin", "traits": {"email": "lin@example.com", "phone": "+1 415 555 0177"}});
    assert_eq!(b.track("/v1/identify", &ws.write_key, &join).await.status(), StatusCode::OK);
    let (status, via_a) =
        json_of(a.get("/api/v1/profiles/lookup?kind=anonymous_id&value=sms-9", &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK);
    let (_, via_b) = json_of(b.get("/api/v1/profiles/lookup?kind=anonymous_id&value=web-9", &ws.api_key).await).await;
    assert_eq!(via_a["id"], via_b["id"], "node A sees the merge node B made");

    // Both nodes ingest at once into one workspace with overlapping identities: every event is kept
    // and identities never split across profiles.
    let mut tasks = Vec::new();
    for (index, server) in [&a, &b].into_iter().enumerate() {
        let (http, url, key) = (server.http.clone(), server.url.clone(), ws.write_key.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let batch: Vec<Value> = (0..20)
                    .map(|n| {
                        json!({"type": "track", "event": "Tick", "messageId": format!("n{index}-{round}-{n}"),
                        "anonymousId": format!("shared-{}", n % 4), "userId": format!("user-{index}-{n}")})
                    })
                    .collect();
                let response = http
                    .post(format!("{url}/v1/batch"))
                    .basic_auth(&key, Some(""))
                    .json(&json!({"batch": batch}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = a.store.workspace_stats(&ws.id, 1).await.unwrap();
    let merges =
        stats.events_per_channel.iter().find(|(channel, _)| channel == "system").map_or(0, |(_, count)| *count);
    assert_eq!(stats.events - merges, 3 + 2 * 10 * 20);
    assert_eq!(stats.profiles, 1 + 4, "Lin, and one profile per shared anonymous id");

    // One customer's messages answered by both nodes at the same moment: no turn's update is lost.
    // Two misunderstood messages in a row hand the conversation to a person; if both nodes read the
    // state before either wrote it, each would count one miss and nobody would be handed over.
    a.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    for customer in 0..6 {
        let message = |node: &TestServer| {
            let body = json!({"bot": "bank", "from": {"kind": "user_id", "value": format!("both-{customer}")}, "text": "purple elephants sing"});
            let request = node
                .http
                .post(format!("{}/api/v1/conversations/messages", node.url))
                .bearer_auth(&ws.api_key)
                .json(&body);
            async move { json_of(request.send().await.unwrap()).await }
        };
        let ((status_a, answer_a), (status_b, answer_b)) = tokio::join!(message(&a), message(&b));
        assert_eq!((status_a, status_b), (StatusCode::OK, StatusCode::OK), "{answer_a} {answer_b}");
        let statuses = [answer_a["status"].as_str().unwrap(), answer_b["status"].as_str().unwrap()];
        assert!(statuses.contains(&"queued"), "customer {customer}: the second miss hands over: {statuses:?}");
        let conversation = answer_a["conversation_id"].as_str().unwrap();
        assert_eq!(conversation, answer_b["conversation_id"], "one conversation");
        let messages = a.store.conversation_messages(&ws.id, conversation).await.unwrap();
        assert_eq!(messages.len(), 4, "two messages and two replies, each once");
    }
    a.stop().await;
    b.stop().await;
}

/// Two nodes join the same two profiles from opposite sides at the same moment (one names the
/// user id with the anonymous id, the other aliases them the other way round): both requests
/// succeed, both identities end on one profile, the survivor is the one the rule picks (the older
/// profile; `crossline_core::profile::survivor_of`), and the merge is recorded once. Then both
/// nodes set a trait on that person at once: both traits stay (no lost update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_merging_one_pair_from_opposite_sides_agree_on_the_survivor() {
    let Some((a, b)) = two_nodes("race").await else { return };
    let ws = a.workspace("race").await;
    async fn lookup(server: &TestServer, api_key: &str, kind: &str, value: &str) -> Value {
        json_of(server.get(&format!("/api/v1/profiles/lookup?kind={kind}&value={value}"), api_key).await).await.1
    }
    for pair in 0..20 {
        let (user, anonymous) = (format!("race-user-{pair}"), format!("race-anon-{pair}"));
        let first = json!({"userId": user, "traits": {"plan": "pro"}});
        let second = json!({"anonymousId": anonymous, "event": "Viewed"});
        assert_eq!(a.track("/v1/identify", &ws.write_key, &first).await.status(), StatusCode::OK);
        assert_eq!(b.track("/v1/track", &ws.write_key, &second).await.status(), StatusCode::OK);
        let older = lookup(&a, &ws.api_key, "user_id", &user).await;
        let newer = lookup(&b, &ws.api_key, "anonymous_id", &anonymous).await;
        assert_ne!(older["id"], newer["id"]);
        // The rule: the smaller (created_at, id) survives.
        let key = |profile: &Value| {
            let created: chrono::DateTime<chrono::Utc> = profile["created_at"].as_str().unwrap().parse().unwrap();
            (created, profile["id"].as_str().unwrap().to_owned())
        };
        let expected = if key(&older) <= key(&newer) { older["id"].clone() } else { newer["id"].clone() };

        let identify = json!({"userId": user, "anonymousId": anonymous});
        let alias = json!({"userId": user, "previousId": anonymous});
        let (on_a, on_b) = tokio::join!(a.track("/v1/identify", &ws.write_key, &identify), async {
            b.track("/v1/alias", &ws.write_key, &alias).await
        });
        assert_eq!((on_a.status(), on_b.status()), (StatusCode::OK, StatusCode::OK), "pair {pair}");

        let by_user = lookup(&b, &ws.api_key, "user_id", &user).await;
        let by_anonymous = lookup(&a, &ws.api_key, "anonymous_id", &anonymous).await;
        assert_eq!(by_user["id"], expected, "pair {pair}: the survivor is the older profile");
        assert_eq!(by_anonymous["id"], expected, "pair {pair}: both identities on it");
        let merges = a
            .store
            .events(
                &ws.id,
                expected.as_str().unwrap(),
                &crossline_store::EventQuery { limit: 50, kind: Some("merge".into()) },
            )
            .await
            .unwrap();
        assert_eq!(merges.len(), 1, "pair {pair}: one merge recorded, not two");

        // Traits set on the person through both nodes at once: neither write is lost.
        let trait_a = json!({"userId": user, "traits": {"via_a": pair}});
        let trait_b = json!({"anonymousId": anonymous, "traits": {"via_b": pair}});
        let (on_a, on_b) = tokio::join!(a.track("/v1/identify", &ws.write_key, &trait_a), async {
            b.track("/v1/identify", &ws.write_key, &trait_b).await
        });
        assert_eq!((on_a.status(), on_b.status()), (StatusCode::OK, StatusCode::OK), "pair {pair}");
        let person = lookup(&a, &ws.api_key, "user_id", &user).await;
        assert_eq!(
            (&person["traits"]["plan"], &person["traits"]["via_a"], &person["traits"]["via_b"]),
            (&json!("pro"), &json!(pair), &json!(pair)),
            "pair {pair}: {person}"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// Two nodes hear each other over NATS: each counts two nodes (so the public limits, shared by the
/// count, allow each node half), and sign-in failures through one node close the door on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_their_limits_and_sign_in_failures() {
    let Some((a, b)) = two_nodes("cluster").await else { return };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (a.cluster.nodes(), b.cluster.nodes()) != (2, 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes did not hear each other: {} and {}",
            a.cluster.nodes(),
            b.cluster.nodes()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wrong tokens through node A, from one address: node B refuses that address too.
    let sign_in = |server: &TestServer, token: &str| {
        server.http.post(format!("{}/login", server.url)).form(&[("token", token)]).send()
    };
    for attempt in 0..crossline_server::throttle::FREE_PER_ADDRESS + 1 {
        let status = sign_in(&a, &format!("sk_wrong_{attempt}")).await.unwrap().status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // Wait until B has heard (each attempt on B would count on B itself), then one attempt there.
    let keys = crossline_server::throttle::keys(Some("127.0.0.1".parse().unwrap()), "sk_any");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.logins.wait(&keys, std::time::Instant::now()).is_none() {
        assert!(std::time::Instant::now() < deadline, "node B never heard of node A's failures");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = sign_in(&b, "sk_wrong_on_b").await.unwrap().status();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "node B heard of node A's failures");
    a.stop().await;
    b.stop().await;
}
