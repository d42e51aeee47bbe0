//! The contact centre over real HTTP: a customer asks for a person, two agents accept at once and
//! one wins, the agent's reply reaches the chat page live, an SMS conversation is answered through
//! the (fake) Twilio API, and an opted-out customer is not written to.

use crate::engage::{FakeTwilio, SID, TOKEN, signed_post};
use crate::harness::{TestServer, json_of};
use crate::webchat::{configure_webchat, connect, frames_until, send};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

async fn agent(server: &TestServer, key: &str, name: &str) -> (String, String) {
    let body = json!({"name": name, "email": format!("{}@example.com", name.to_lowercase()), "skills": ["cards"], "languages": ["en"]});
    let (status, made) = server.post_json("/api/v1/agents", key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["status"], "offline", "a new agent is offline: {made}");
    (made["id"].as_str().unwrap().to_owned(), made["token"].as_str().unwrap().to_owned())
}

async fn queued(server: &TestServer, token: &str) -> Vec<Value> {
    let (status, list) = json_of(server.get("/api/v1/conversations?status=queued", token).await).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["conversations"].as_array().unwrap().clone()
}

/// The conversation at `path` once `ready` holds (within 5 s), else null.
async fn conversation_when(server: &TestServer, path: &str, key: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (_, conversation) = json_of(server.get(path, key).await).await;
        if ready(&conversation) {
            return conversation;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Value::Null
}

/// The `crossline_session=...` pair a sign-in set.
fn session_cookie(signed_in: &reqwest::Response) -> String {
    signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|pair| pair.starts_with("crossline_session="))
        .unwrap()
}

/// A request opening the inbox socket with a session cookie.
fn inbox_socket_request(
    server: &TestServer,
    cookie: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("{}/inbox/ws", server.url.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    request
}

async fn post_empty(server: &TestServer, path: &str, token: &str) -> (StatusCode, Value) {
    json_of(server.http.post(format!("{}{path}", server.url)).bearer_auth(token).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_handoff_is_taken_once_and_the_agents_reply_reaches_the_page_live() {
    let server = TestServer::start().await;
    let ws = server.workspace("care").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    assert_eq!(configure_webchat(&server, &ws.api_key, &json!({"bot": "bank"})).await.0, StatusCode::OK);
    let (grace_id, grace) = agent(&server, &ws.api_key, "Grace").await;
    let (_, alan) = agent(&server, &ws.api_key, "Alan").await;
    let (status, refused) =
        server.post_json("/api/v1/agents", &ws.api_key, &json!({"name": "G", "email": "GRACE@example.com"})).await;
    assert_eq!(
        (status, refused["error"]["message"].as_str().unwrap().starts_with("email")),
        (StatusCode::BAD_REQUEST, true)
    );

    let mut socket = connect(&server, &ws.id, "visitor-0123456789abcdef").await;
    send(&mut socket, json!({"type": "hello"})).await;
    frames_until(&mut socket, "message").await;
    send(&mut socket, json!({"type": "message", "id": "m1", "text": "I want to book an appointment"})).await;
    frames_until(&mut socket, "ack").await;
    send(&mut socket, json!({"type": "message", "id": "m2", "text": "can I talk to a real person please?"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert!(
        frames
            .iter()
            .any(|frame| frame["author"] == "bot" && frame["text"] == "Let me connect you with a person who can help."),
        "{frames:?}"
    );

    let waiting = queued(&server, &grace).await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let conversation = waiting[0]["id"].as_str().unwrap().to_owned();
    assert_eq!((waiting[0]["channel"].as_str(), waiting[0]["queue"].as_str()), (Some("chat"), Some("default")));
    // The handoff names why and carries the half-filled form for the agent.
    let (_, profile) = json_of(
        server
            .get(
                &format!("/api/v1/profiles/{}/events?limit=50", waiting[0]["profile_id"].as_str().unwrap()),
                &ws.api_key,
            )
            .await,
    )
    .await;
    let handoff = profile["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event"] == "conversation.handoff")
        .cloned()
        .unwrap();
    assert_eq!(
        (handoff["properties"]["reason"].as_str(), handoff["properties"]["summary"]["intent"].as_str()),
        (Some("request"), Some("book_appointment")),
        "{handoff}"
    );

    // Before anyone takes it, an agent cannot write to it.
    let path = format!("/api/v1/conversations/{conversation}");
    let (status, early) = server.post_json(&format!("{path}/messages"), &grace, &json!({"text": "hello?"})).await;
    assert_eq!((status, early["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_assigned")), "{early}");

    // Two agents accept at once: one has it, the other is told who does.
    let assign = format!("{path}/assign");
    let (first, second) = tokio::join!(post_empty(&server, &assign, &grace), post_empty(&server, &assign, &alan));
    let mut outcomes = [first.0, second.0];
    outcomes.sort();
    assert_eq!(outcomes, [StatusCode::OK, StatusCode::CONFLICT], "{first:?} {second:?}");
    let (winner, loser) = if first.0 == StatusCode::OK { (&grace, &alan) } else { (&alan, &grace) };
    let taken = if first.0 == StatusCode::OK { &first.1 } else { &second.1 };
    assert_eq!(taken["status"], "assigned");
    let lost = if first.0 == StatusCode::OK { &second.1 } else { &first.1 };
    assert!(lost["error"]["message"].as_str().unwrap().contains("assignee: agt_"), "{lost}");
    assert!(queued(&server, winner).await.is_empty());

    // The customer writes again: people have the conversation, so the bot stays quiet.
    send(&mut socket, json!({"type": "message", "id": "m3", "text": "my card is blocked too"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert!(frames.iter().all(|frame| frame["type"] != "message"), "the bot says nothing: {frames:?}");

    // The agent answers; the page shows it without the customer sending anything.
    let (status, sent) =
        server.post_json(&format!("{path}/messages"), winner, &json!({"text": "Hi, I'm here. {{ not liquid }}"})).await;
    assert_eq!((status, sent["delivered_by"].as_str()), (StatusCode::CREATED, Some("chat")), "{sent}");
    let frames = frames_until(&mut socket, "message").await;
    let live = frames.last().unwrap();
    assert_eq!(
        (live["author"].as_str(), live["text"].as_str()),
        (Some("agent"), Some("Hi, I'm here. {{ not liquid }}")),
        "{frames:?}"
    );
    let (status, other) = server.post_json(&format!("{path}/messages"), loser, &json!({"text": "me too"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{other}");

    // The transcript has every part, each with its author and channel.
    let (_, transcript) = json_of(server.get(&path, winner).await).await;
    let authors: Vec<&str> =
        transcript["messages"].as_array().unwrap().iter().map(|message| message["author"].as_str().unwrap()).collect();
    assert_eq!(authors.last(), Some(&"agent"), "{transcript}");
    assert!(authors.contains(&"customer") && authors.contains(&"bot"), "{transcript}");

    // An agent token is for the conversation API only, and only in its workspace.
    assert_eq!(server.get("/api/v1/profiles", winner).await.status(), StatusCode::FORBIDDEN);
    let other_ws = server.workspace("other").await;
    let (_, stranger) = agent(&server, &other_ws.api_key, "Eve").await;
    assert_eq!(server.get(&path, &stranger).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(post_empty(&server, &assign, &stranger).await.0, StatusCode::NOT_FOUND);
    let (status, _) =
        server.put_json(&format!("/api/v1/agents/{grace_id}/status"), &alan, &json!({"status": "away"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an agent sets only its own status");
    let (status, me) = server.put_json("/api/v1/agents/me/status", &grace, &json!({"status": "available"})).await;
    assert_eq!((status, me["status"].as_str()), (StatusCode::OK, Some("available")));

    // Resolved: the customer is asked for a score, with buttons, and answers it.
    let (status, resolved) = post_empty(&server, &format!("{path}/resolve"), winner).await;
    assert_eq!((status, resolved["status"].as_str()), (StatusCode::OK, Some("resolved")));
    let frames = frames_until(&mut socket, "message").await;
    let asked = frames.last().unwrap();
    assert!(asked["text"].as_str().unwrap().starts_with("How did we do?"), "{frames:?}");
    assert_eq!(asked["quick_replies"], json!(["1", "2", "3", "4", "5"]));
    send(&mut socket, json!({"type": "message", "id": "m-score", "text": "4"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert!(frames.iter().any(|frame| frame["text"] == "Thank you for your feedback!"), "{frames:?}");
    let profile_id = waiting[0]["profile_id"].as_str().unwrap();
    let (_, timeline) =
        json_of(server.get(&format!("/api/v1/profiles/{profile_id}/events?limit=50"), &ws.api_key).await).await;
    let events = timeline["events"].as_array().unwrap();
    let score = events.iter().find(|event| event["event"] == "csat.submitted").expect("the score is an event");
    assert_eq!(
        (score["properties"]["score"].as_u64(), score["properties"]["agent_id"].as_str().is_some()),
        (Some(4), true)
    );
    let closed = events.iter().find(|event| event["event"] == "conversation.resolved").unwrap();
    for time in ["wait_seconds", "first_response_seconds", "handle_seconds"] {
        assert!(closed["properties"][time].as_f64().is_some(), "{time}: {closed}");
    }
    // A second digit is just a message to the bot, in a new conversation.
    send(&mut socket, json!({"type": "message", "id": "m4", "text": "when are you open"})).await;
    let frames = frames_until(&mut socket, "ack").await;
    assert!(
        frames.iter().any(|frame| frame["author"] == "bot" && frame["text"] == "We are open 9 to 5, Monday to Friday."),
        "{frames:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_handoff_is_answered_through_twilio_and_an_opted_out_customer_is_not_written_to() {
    let (twilio_url, twilio) = FakeTwilio::start().await;
    let server = TestServer::start().await;
    let ws = server.workspace("sms-care").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let config = json!({"account_sid": SID, "auth_token": TOKEN, "phone_number": "+14155550999", "bot": "bank", "api_base_url": twilio_url});
    assert_eq!(server.put_json("/api/v1/channels/twilio", &ws.api_key, &config).await.0, StatusCode::OK);
    let (agent_id, token) = agent(&server, &ws.api_key, "Grace").await;

    let hook = format!("/hooks/{}/twilio/sms", ws.id);
    let sms = |sid: &'static str, from: &'static str, body: &'static str| {
        [("MessageSid", sid), ("From", from), ("To", "+14155550999"), ("Body", body), ("AccountSid", SID)]
    };
    assert_eq!(signed_post(&server, &hook, &sms("SMa1", "+14155550100", "I lost my card")).await, StatusCode::OK);
    let waiting = queued(&server, &token).await;
    assert_eq!(
        (waiting.len(), waiting[0]["queue"].as_str(), waiting[0]["channel"].as_str()),
        (1, Some("cards"), Some("sms"))
    );
    let path = format!("/api/v1/conversations/{}", waiting[0]["id"].as_str().unwrap());
    // The workspace's key gives it to the agent.
    let (status, taken) =
        server.post_json(&format!("{path}/assign"), &ws.api_key, &json!({"agent_id": agent_id})).await;
    assert_eq!((status, taken["assignee"].as_str()), (StatusCode::OK, Some(agent_id.as_str())), "{taken}");
    let (status, sent) = server
        .post_json(&format!("{path}/messages"), &token, &json!({"text": "I've blocked it. A new card is on its way."}))
        .await;
    assert_eq!((status, sent["delivered_by"].as_str()), (StatusCode::CREATED, Some("sms")), "{sent}");
    let delivered = twilio.until("+14155550100", 1).await;
    assert_eq!(
        (delivered[0]["Body"].as_str(), delivered[0]["From"].as_str()),
        ("I've blocked it. A new card is on its way.", "+14155550999")
    );

    // A second customer hands off, then texts STOP: the agent's reply is refused, and nothing goes.
    assert_eq!(signed_post(&server, &hook, &sms("SMb1", "+14155550101", "agent")).await, StatusCode::OK);
    let second = queued(&server, &token).await;
    let path = format!("/api/v1/conversations/{}", second[0]["id"].as_str().unwrap());
    assert_eq!(post_empty(&server, &format!("{path}/assign"), &token).await.0, StatusCode::OK);
    assert_eq!(signed_post(&server, &hook, &sms("SMb2", "+14155550101", "STOP")).await, StatusCode::OK);
    let (status, refused) =
        server.post_json(&format!("{path}/messages"), &token, &json!({"text": "Are you there?"})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_deliverable")),
        "{refused}"
    );
    assert!(refused["error"]["message"].as_str().unwrap().contains("opted out of sms"), "{refused}");
    let (_, transcript) = json_of(server.get(&path, &token).await).await;
    assert!(
        transcript["messages"].as_array().unwrap().iter().all(|message| message["author"] != "agent"),
        "nothing stored: {transcript}"
    );
    assert_eq!(post_empty(&server, &format!("{path}/resolve"), &token).await.0, StatusCode::OK);

    // Resolved by SMS: the score is asked by SMS and a digit answers it.
    assert_eq!(signed_post(&server, &hook, &sms("SMc1", "+14155550102", "speak to someone")).await, StatusCode::OK);
    let third = queued(&server, &token).await;
    let path_c = format!("/api/v1/conversations/{}", third[0]["id"].as_str().unwrap());
    assert_eq!(post_empty(&server, &format!("{path_c}/assign"), &token).await.0, StatusCode::OK);
    assert_eq!(post_empty(&server, &format!("{path_c}/resolve"), &token).await.0, StatusCode::OK);
    let asked = twilio.until("+14155550102", 1).await;
    assert!(asked[0]["Body"].starts_with("How did we do?"), "{asked:?}");
    // Deliveries go out oldest first: had anything been queued for the opted-out customer when
    // their conversation was resolved (before this one), it would have gone by now.
    assert!(
        twilio.to("+14155550101").is_empty(),
        "nothing sent to the opted-out customer, not even the score question"
    );
    let url = format!("{}{hook}", server.url);
    let score = sms("SMc2", "+14155550102", "5").map(|(k, v)| (k.to_owned(), v.to_owned()));
    let signature = crossline_channels::twilio::signature(TOKEN, &url, &score);
    let answer = server.http.post(&url).header("X-Twilio-Signature", signature).form(&score).send().await.unwrap();
    assert!(answer.text().await.unwrap().contains("Thank you for your feedback!"));

    // Handed back to the bot, which answers the next text itself.
    assert_eq!(signed_post(&server, &hook, &sms("SMa2", "+14155550100", "thanks")).await, StatusCode::OK);
    let first = format!("/api/v1/conversations/{}", waiting[0]["id"].as_str().unwrap());
    let (status, back) = post_empty(&server, &format!("{first}/hand-back"), &token).await;
    assert_eq!((status, back["status"].as_str()), (StatusCode::OK, Some("bot")), "{back}");
    let response = server
        .http
        .post(format!("{}{hook}", server.url))
        .header(
            "X-Twilio-Signature",
            crossline_channels::twilio::signature(
                TOKEN,
                &format!("{}{hook}", server.url),
                &sms("SMa3", "+14155550100", "when are you open").map(|(k, v)| (k.to_owned(), v.to_owned())),
            ),
        )
        .form(&sms("SMa3", "+14155550100", "when are you open"))
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains("We are open 9 to 5"), "the bot answers again");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_give_a_conversation_to_one_agent_and_the_reply_crosses_to_the_customers_node() {
    let (Ok(database_url), Ok(nats_url)) =
        (std::env::var("CROSSLINE_TEST_DATABASE_URL"), std::env::var("CROSSLINE_TEST_NATS_URL"))
    else {
        eprintln!(
            "CROSSLINE_TEST_DATABASE_URL and CROSSLINE_TEST_NATS_URL are not both set: the two-node agent test did not run"
        );
        return;
    };
    crossline_store::postgres::drop_schemas(&database_url, "agents_nodes_").await;
    crossline_bus::nats::remove_streams(&nats_url, "AGENTSNODES_").await;
    let run = format!("{}_{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let a =
        crate::two_nodes::node(&database_url, &nats_url, &format!("agents_nodes_{run}"), &format!("AGENTSNODES_{run}"))
            .await;
    let b =
        crate::two_nodes::node(&database_url, &nats_url, &format!("agents_nodes_{run}"), &format!("AGENTSNODES_{run}"))
            .await;
    let ws = a.workspace("shared-care").await;
    a.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    assert_eq!(configure_webchat(&a, &ws.api_key, &json!({"bot": "bank"})).await.0, StatusCode::OK);

    // Ten customers on node A's chat ask for a person.
    let mut sockets = Vec::new();
    for index in 0..10 {
        let mut socket = connect(&a, &ws.id, &format!("visitor-{index:02}-0123456789abcdef")).await;
        send(&mut socket, json!({"type": "hello"})).await;
        frames_until(&mut socket, "message").await;
        send(&mut socket, json!({"type": "message", "id": "m1", "text": "agent please"})).await;
        frames_until(&mut socket, "ack").await;
        sockets.push(socket);
    }
    let (ada, on_a) = agent(&a, &ws.api_key, "Ada").await;
    let (_, on_b) = agent(&b, &ws.api_key, "Bob").await;
    let waiting = queued(&b, &on_b).await;
    assert_eq!(waiting.len(), 10, "node B sees node A's queue");

    // The two agents, one on each node, accept every conversation at the same moment.
    let mut won = Vec::new();
    for conversation in &waiting {
        let path = format!("/api/v1/conversations/{}/assign", conversation["id"].as_str().unwrap());
        let (first, second) = tokio::join!(post_empty(&a, &path, &on_a), post_empty(&b, &path, &on_b));
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{first:?} {second:?}");
        won.push(if first.0 == StatusCode::OK { first.1["assignee"].clone() } else { second.1["assignee"].clone() });
    }
    let (_, assigned) = json_of(a.get("/api/v1/conversations?status=assigned&limit=50", &ws.api_key).await).await;
    let assigned = assigned["conversations"].as_array().unwrap();
    assert_eq!(assigned.len(), 10, "every conversation has exactly one agent");
    for conversation in assigned {
        assert!(won.contains(&conversation["assignee"]), "{conversation}");
    }

    // The reply is posted to node B; the customer's socket is on node A.
    let first = &assigned[0];
    let token = if first["assignee"] == json!(ada) { &on_a } else { &on_b };
    let path = format!("/api/v1/conversations/{}/messages", first["id"].as_str().unwrap());
    let (status, sent) = b.post_json(&path, token, &json!({"text": "Hello from the other node"})).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    // Which socket is that customer's: the one whose transcript holds the reply.
    let mut reached = 0;
    for socket in &mut sockets {
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) =
            tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(socket)).await
        {
            let frame: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                (frame["author"].as_str(), frame["text"].as_str()),
                (Some("agent"), Some("Hello from the other node"))
            );
            reached += 1;
        }
    }
    assert_eq!(reached, 1, "the reply crossed from node B to its customer's socket on node A, and to no other");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_conversations_are_routed_by_skill_idle_time_and_capacity() {
    let server = TestServer::start().await;
    let ws = server.workspace("routing").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let (status, refused) = server.put_json("/api/v1/queues/cards", &ws.api_key, &json!({"priority": 12})).await;
    assert_eq!(
        (status, refused["error"]["message"].as_str().unwrap().starts_with("priority")),
        (StatusCode::BAD_REQUEST, true)
    );
    let (status, queue) =
        server.put_json("/api/v1/queues/cards", &ws.api_key, &json!({"skills": ["Cards"], "priority": 5})).await;
    assert_eq!((status, &queue["definition"]["skills"]), (StatusCode::OK, &json!(["cards"])), "{queue}");
    let (srv, key) = (&server, ws.api_key.as_str());
    let make = |name: &'static str, skills: Value| {
        let body = json!({"name": name, "email": format!("{name}@example.com"), "skills": skills, "capacity": 1});
        async move { srv.post_json("/api/v1/agents", key, &body).await.1 }
    };
    let ben = make("ben", json!([])).await;
    let ann = make("ann", json!(["cards"])).await;
    for agent in [&ben, &ann] {
        let path = format!("/api/v1/agents/{}/status", agent["id"].as_str().unwrap());
        assert_eq!(server.put_json(&path, &ws.api_key, &json!({"status": "available"})).await.0, StatusCode::OK);
    }
    let say = |phone: &'static str, text: &'static str| json!({"bot": "bank", "from": {"kind": "phone", "value": phone}, "text": text, "channel": "sms"});
    let assignee_of = |conversation_id: String| async move {
        for _ in 0..100 {
            let (_, found) = json_of(srv.get(&format!("/api/v1/conversations/{conversation_id}"), key).await).await;
            if found["status"] == "assigned" {
                return found["assignee"].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Value::Null
    };
    // A lost card goes to the only agent with the skill, though Ben has waited longer.
    let (_, card) = server.converse(&ws.api_key, &say("+14155550100", "I lost my card")).await;
    assert_eq!(assignee_of(card["conversation_id"].as_str().unwrap().to_owned()).await, ann["id"], "{card}");
    // A general request goes to whoever fits: Ben.
    let (_, general) = server.converse(&ws.api_key, &say("+14155550101", "can I speak to an agent")).await;
    assert_eq!(assignee_of(general["conversation_id"].as_str().unwrap().to_owned()).await, ben["id"]);
    // Both are full: the next one waits in its queue.
    let (_, third) = server.converse(&ws.api_key, &say("+14155550102", "agent")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = queued(&server, &ws.api_key).await;
    assert_eq!(waiting.iter().map(|c| c["id"].clone()).collect::<Vec<_>>(), [third["conversation_id"].clone()]);
    // Ben resolves his: the waiting one is his now.
    let path = format!("/api/v1/conversations/{}/resolve", general["conversation_id"].as_str().unwrap());
    assert_eq!(post_empty(&server, &path, &ws.api_key).await.0, StatusCode::OK);
    assert_eq!(assignee_of(third["conversation_id"].as_str().unwrap().to_owned()).await, ben["id"]);
    let (_, events) = json_of(
        server
            .get(
                &format!(
                    "/api/v1/profiles/{}/events?limit=20",
                    card_profile(&server, &ws.api_key, "+14155550100").await
                ),
                &ws.api_key,
            )
            .await,
    )
    .await;
    let assigned =
        events["events"].as_array().unwrap().iter().find(|event| event["event"] == "conversation.assigned").unwrap();
    assert_eq!(
        (assigned["properties"]["routed"].as_bool(), assigned["properties"]["queue"].as_str()),
        (Some(true), Some("cards"))
    );
    server.stop().await;
}

async fn card_profile(server: &TestServer, key: &str, phone: &str) -> String {
    let (_, profile) = json_of(
        server.get(&format!("/api/v1/profiles/lookup?kind=phone&value={}", phone.replace('+', "%2B")), key).await,
    )
    .await;
    profile["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_signs_in_to_the_inbox_only_and_its_socket_hears_the_workspace() {
    let server = TestServer::start().await;
    let ws = server.workspace("desk").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let (_, token) = agent(&server, &ws.api_key, "Grace").await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in =
        browser.post(format!("{}/login", server.url)).form(&[("token", token.as_str())]).send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()["location"], "/inbox", "an agent lands in the inbox");
    let cookie = session_cookie(&signed_in);
    let get = |path: &str| browser.get(format!("{}{path}", server.url)).header("cookie", &cookie).send();
    let inbox = get("/inbox").await.unwrap();
    assert_eq!(inbox.status(), StatusCode::OK);
    let page = inbox.text().await.unwrap();
    assert!(page.contains("data-inbox") && page.contains("data-testid=\"inbox-customer\""), "{page}");
    assert!(!page.contains("href=\"/profiles\""), "no other sections in an agent's sidebar");
    for path in ["/profiles", "/campaigns", "/channels", "/workspaces", "/bots", "/segments"] {
        assert_eq!(get(path).await.unwrap().status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(get("/").await.unwrap().headers()["location"], "/inbox");
    assert_eq!(get("/api/v1/conversations").await.unwrap().status(), StatusCode::OK, "the API with the session cookie");
    assert_eq!(get("/api/v1/profiles").await.unwrap().status(), StatusCode::FORBIDDEN);

    // The inbox socket, opened with the session, hears a handoff; another site cannot open it.
    let request = inbox_socket_request(&server, &cookie);
    let mut forged = request.clone();
    forged.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(forged).await.is_err(), "a cross-site socket is refused");
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (_, handed) = server
        .converse(
            &ws.api_key,
            &json!({"bot": "bank", "from": {"kind": "phone", "value": "+14155550100"}, "text": "agent"}),
        )
        .await;
    let frame = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut socket))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let notice: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(
        (&notice["conversation_id"], notice["status"].as_str()),
        (&handed["conversation_id"], Some("queued")),
        "{notice}"
    );
    assert!(notice.get("text").is_none() && notice.get("profile_id").is_none(), "a notice carries no customer data");

    // The customer panel: identities, traits and the form, for the workspace's conversations only.
    let panel_path = format!("/api/v1/conversations/{}/customer", handed["conversation_id"].as_str().unwrap());
    let (status, panel) = json_of(server.get(&panel_path, &token).await).await;
    assert_eq!(status, StatusCode::OK, "{panel}");
    assert_eq!(panel["profile"]["identities"][0]["value"], "+14155550100", "{panel}");
    assert!(
        panel["events"].as_array().unwrap().iter().any(|event| event["event"] == "conversation.handoff"),
        "{panel}"
    );
    let other = server.workspace("elsewhere").await;
    let (_, stranger) = agent(&server, &other.api_key, "Eve").await;
    assert_eq!(server.get(&panel_path, &stranger).await.status(), StatusCode::NOT_FOUND);

    // Removed: the token and the console session stop working at once.
    let (_, listed) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    let grace = listed["agents"][0]["id"].as_str().unwrap().to_owned();
    let removed = server
        .http
        .delete(format!("{}/api/v1/agents/{grace}", server.url))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.get("/api/v1/conversations", &token).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get("/inbox").await.unwrap().headers()["location"], "/login");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_first_response_escalates_and_a_departed_agents_conversations_wait_again() {
    let server = TestServer::start_with_settings(crossline_server::Settings {
        agent_grace: Duration::from_millis(300),
        ..TestServer::settings()
    })
    .await;
    let ws = server.workspace("sla").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let (status, refused) =
        server.put_json("/api/v1/queues/cards", &ws.api_key, &json!({"escalate_to": "seniors"})).await;
    assert_eq!(
        (status, refused["error"]["message"].as_str().unwrap().starts_with("escalate_to")),
        (StatusCode::BAD_REQUEST, true)
    );
    let cards = json!({"skills": ["cards"], "first_response_seconds": 1, "escalate_to": "seniors"});
    assert_eq!(server.put_json("/api/v1/queues/cards", &ws.api_key, &cards).await.0, StatusCode::OK);
    let (_, lost) = server
        .converse(
            &ws.api_key,
            &json!({"bot": "bank", "from": {"kind": "phone", "value": "+14155550100"}, "text": "I lost my card"}),
        )
        .await;
    let path = format!("/api/v1/conversations/{}", lost["conversation_id"].as_str().unwrap());
    // Nobody takes it within a second: the next routing pass escalates it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(server.put_json("/api/v1/queues/seniors", &ws.api_key, &json!({"priority": 9})).await.0, StatusCode::OK);
    let escalated = conversation_when(&server, &path, &ws.api_key, |c| c["queue"] == "seniors").await;
    assert_eq!(
        (escalated["queue"].as_str(), escalated["status"].as_str()),
        (Some("seniors"), Some("queued")),
        "{escalated}"
    );
    let profile = escalated["profile_id"].as_str().unwrap();
    let (_, timeline) =
        json_of(server.get(&format!("/api/v1/profiles/{profile}/events?limit=30"), &ws.api_key).await).await;
    let breach = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event"] == "conversation.sla_breached")
        .cloned()
        .unwrap();
    assert_eq!(
        (breach["properties"]["kind"].as_str(), breach["properties"]["escalated_to"].as_str()),
        (Some("first_response"), Some("seniors"))
    );

    // An agent takes it in the inbox, then closes the inbox and does not come back.
    let (agent_id, token) = agent(&server, &ws.api_key, "Grace").await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in =
        browser.post(format!("{}/login", server.url)).form(&[("token", token.as_str())]).send().await.unwrap();
    let cookie = session_cookie(&signed_in);
    let request = inbox_socket_request(&server, &cookie);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(post_empty(&server, &format!("{path}/assign"), &token).await.0, StatusCode::OK);
    drop(socket);
    let requeued = conversation_when(&server, &path, &ws.api_key, |c| c["status"] == "queued").await;
    assert_eq!((requeued["status"].as_str(), requeued["assignee"].as_str()), (Some("queued"), None), "{requeued}");
    let (_, agents) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    let grace = agents["agents"].as_array().unwrap().iter().find(|agent| agent["id"] == json!(agent_id)).unwrap();
    assert_eq!(grace["status"], "offline");
    server.stop().await;
}

/// Every operation of the API document an agent's token is not for answers it 403, whatever its
/// method and path; the conversation API answers it (not 401 or 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_is_refused_by_every_operation_but_the_conversation_api() {
    let server = TestServer::start().await;
    let ws = server.workspace("walk").await;
    let (agent_id, token) = agent(&server, &ws.api_key, "Grace").await;
    let document: Value =
        server.http.get(format!("{}/api/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    let agents_may = |method: &str, path: &str| {
        (path.starts_with("/api/v1/conversations/") && path != "/api/v1/conversations/messages")
            || (method == "get"
                && matches!(
                    path,
                    "/api/v1/conversations" | "/api/v1/agents" | "/api/v1/queues" | "/api/v1/canned-replies"
                ))
            || (method == "put" && path == "/api/v1/agents/{id}/status")
    };
    let mut walked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let bearer = operation["security"]
                .as_array()
                .is_some_and(|schemes| schemes.iter().any(|s| s.get("bearer").is_some()));
            if !bearer {
                continue;
            }
            // Path parameters: the agent's own workspace and id where they fit, else a made-up name.
            let concrete = path
                .replace("{id}", if path.starts_with("/api/v1/workspaces") { &ws.id } else { &agent_id })
                .replace("{kind}", "api")
                .split('/')
                .map(|part| if part.starts_with('{') { "x" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            let request = server
                .http
                .request(method.to_uppercase().parse().unwrap(), format!("{}{concrete}", server.url))
                .bearer_auth(&token)
                .json(&json!({}));
            let status = request.send().await.unwrap().status();
            walked += 1;
            if agents_may(method, path) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {concrete} answered an agent's token");
            }
        }
    }
    assert!(walked > 50, "the document's operations were walked ({walked})");
    // The key the agent could not rotate still works.
    assert_eq!(server.get("/api/v1/profiles", &ws.api_key).await.status(), StatusCode::OK);
    server.stop().await;
}

/// Notes are for colleagues (in the conversation's view, never in the customer's transcript), and
/// canned replies render for the conversation's customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_stay_with_colleagues_and_canned_replies_render_for_the_customer() {
    let server = TestServer::start().await;
    let ws = server.workspace("notes").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let (_, token) = agent(&server, &ws.api_key, "Nia").await;
    let identify = json!({"userId": "u-fay", "traits": {"first_name": "Fay <b>", "phone": "+14155550177"}});
    assert_eq!(server.track("/v1/identify", &ws.write_key, &identify).await.status(), StatusCode::OK);
    let say = json!({"bot": "bank", "from": {"kind": "phone", "value": "+14155550177"}, "text": "can I talk to a person", "channel": "sms"});
    let (status, _) = server.converse(&ws.api_key, &say).await;
    assert_eq!(status, StatusCode::OK);
    let waiting = queued(&server, &token).await;
    let id = waiting[0]["id"].as_str().unwrap().to_owned();

    // A note, by the agent; bad ones name the field.
    let notes = format!("/api/v1/conversations/{id}/notes");
    let (status, note) =
        server.post_json(&notes, &token, &json!({"text": "VIP: <script>x</script> card blocked twice"})).await;
    assert_eq!(status, StatusCode::CREATED, "{note}");
    assert_eq!(
        (note["author_name"].as_str(), note["id"].as_str().map(|id| id.starts_with("nte_"))),
        (Some("Nia"), Some(true))
    );
    for bad in [json!({"text": "  "}), json!({"text": "x".repeat(4_001)}), json!({"words": "x"})] {
        let (status, error) = server.post_json(&notes, &token, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    }
    let (status, _) = server.post_json("/api/v1/conversations/cnv_none/notes", &token, &json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, view) = json_of(server.get(&format!("/api/v1/conversations/{id}"), &token).await).await;
    assert_eq!(view["notes"][0]["text"], "VIP: <script>x</script> card blocked twice");
    let transcript = view["messages"].to_string();
    assert!(!transcript.contains("card blocked"), "a note is not a message: {transcript}");
    // Another workspace cannot see or write them.
    let other = server.workspace("other").await;
    let (status, _) = server.post_json(&notes, &other.api_key, &json!({"text": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Canned replies: saved by the workspace (Liquid checked), read and rendered for agents.
    let (status, error) = server
        .put_json("/api/v1/canned-replies/greet", &ws.api_key, &json!({"text": "Hi {{ profile.traits.first_name"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["error"]["message"].as_str().unwrap().starts_with("text: line 1"), "{error}");
    let greet = json!({"text": "Hi {{ profile.traits.first_name | default: \"there\" }}, thanks for waiting."});
    assert_eq!(server.put_json("/api/v1/canned-replies/greet", &ws.api_key, &greet).await.0, StatusCode::OK);
    let bye = json!({"text": "Anything else?"});
    assert_eq!(server.put_json("/api/v1/canned-replies/bye", &ws.api_key, &bye).await.0, StatusCode::OK);
    let (status, _) = server.put_json("/api/v1/canned-replies/greet", &token, &greet).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "agents use canned replies, admins and supervisors write them");
    let (_, list) = json_of(server.get("/api/v1/canned-replies", &token).await).await;
    assert_eq!(list["canned_replies"][0]["name"], "bye");
    let (_, rendered) = json_of(server.get(&format!("/api/v1/conversations/{id}/canned-replies"), &token).await).await;
    assert_eq!(rendered["canned_replies"][1], json!({"name": "greet", "text": "Hi Fay <b>, thanks for waiting."}));
    let deleted = server
        .http
        .delete(format!("{}/api/v1/canned-replies/bye", server.url))
        .bearer_auth(&ws.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (_, list) = json_of(server.get("/api/v1/canned-replies", &token).await).await;
    assert_eq!(list["canned_replies"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// A customer an agent holds who waits past the queue's `next_response_seconds` for the next answer
/// is recorded once as a breach; an answer in time is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_next_response_is_recorded_once_and_a_timely_one_is_not() {
    let server = TestServer::start().await;
    let ws = server.workspace("next").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let (status, refused) =
        server.put_json("/api/v1/queues/cards", &ws.api_key, &json!({"next_response_seconds": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused["error"]["message"].as_str().unwrap().starts_with("next_response_seconds"));
    let cards = json!({"skills": ["cards"], "next_response_seconds": 1});
    assert_eq!(server.put_json("/api/v1/queues/cards", &ws.api_key, &cards).await.0, StatusCode::OK);
    let say = |text: &str| json!({"bot": "bank", "from": {"kind": "phone", "value": "+14155550123"}, "text": text});
    let (_, lost) = server.converse(&ws.api_key, &say("I lost my card")).await;
    let id = lost["conversation_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/conversations/{id}");
    let (_, token) = agent(&server, &ws.api_key, "Ola").await;
    assert_eq!(post_empty(&server, &format!("{path}/assign"), &token).await.0, StatusCode::OK);
    let (status, _) = server.post_json(&format!("{path}/messages"), &token, &json!({"text": "Hi, I am on it."})).await;
    assert_eq!(status, StatusCode::CREATED);
    let nudge = || server.put_json("/api/v1/queues/cards", &ws.api_key, &cards);
    let breaches = || async {
        let (_, profile) = json_of(server.get(&path, &ws.api_key).await).await;
        let profile_id = profile["profile_id"].as_str().unwrap().to_owned();
        let (_, timeline) =
            json_of(server.get(&format!("/api/v1/profiles/{profile_id}/events?limit=100"), &ws.api_key).await).await;
        timeline["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["event"] == "conversation.sla_breached")
            .cloned()
            .collect::<Vec<Value>>()
    };
    // Answered in time: the wait after taking it ended with the reply; nothing is recorded.
    let waits = || server.store.awaiting(&ws.id, chrono::Utc::now() + chrono::Duration::hours(1), 10);
    assert!(waits().await.unwrap().is_empty(), "the reply ended the wait");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(nudge().await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(breaches().await.is_empty(), "no breach: {:?}", breaches().await);

    // The customer writes again and nobody answers for over a second.
    let (status, _) = server.converse(&ws.api_key, &say("hello? are you there?")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(waits().await.unwrap().iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut found = Vec::new();
    for _ in 0..50 {
        assert_eq!(nudge().await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = breaches().await;
        if !found.is_empty() {
            break;
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    let properties = &found[0]["properties"];
    assert_eq!((properties["kind"].as_str(), properties["queue"].as_str()), (Some("next_response"), Some("cards")));
    assert!(properties["waited_seconds"].as_f64().unwrap() > 1.0, "{properties}");
    // Found again by later passes, it is not recorded twice; the conversation stays with its agent.
    for _ in 0..3 {
        nudge().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(breaches().await.len(), 1);
    let (_, now) = json_of(server.get(&path, &ws.api_key).await).await;
    assert_eq!(now["status"], "assigned");

    // A script with the agent's token cannot flood the customer: 60 at once, then 20 a second.
    let url = format!("{}{path}/messages", server.url);
    let flood = (0..150)
        .map(|index| server.http.post(&url).bearer_auth(&token).json(&json!({"text": format!("spam {index}")})).send());
    let statuses: Vec<StatusCode> =
        futures::future::join_all(flood).await.into_iter().map(|response| response.unwrap().status()).collect();
    let limited = statuses.iter().filter(|status| **status == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(limited >= 150 - 60 - 40, "{limited} of 150 refused: {statuses:?}");
    assert!(statuses.iter().all(|status| *status == StatusCode::CREATED || *status == StatusCode::TOO_MANY_REQUESTS));
    server.stop().await;
}

/// Typing shows across: the customer typing reaches the inbox of the agent who has the conversation,
/// the agent typing reaches the customer's page; nothing is stored, and only the agent who has it
/// may say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_side_live() {
    let server = TestServer::start().await;
    let ws = server.workspace("typing").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    assert_eq!(configure_webchat(&server, &ws.api_key, &json!({"bot": "bank"})).await.0, StatusCode::OK);
    let (_, grace) = agent(&server, &ws.api_key, "Grace").await;
    let (_, alan) = agent(&server, &ws.api_key, "Alan").await;
    let mut chat = connect(&server, &ws.id, "visitor-typing-0123456789").await;
    send(&mut chat, json!({"type": "hello"})).await;
    frames_until(&mut chat, "message").await;
    send(&mut chat, json!({"type": "message", "id": "m1", "text": "can I talk to a real person please?"})).await;
    frames_until(&mut chat, "ack").await;
    let id = queued(&server, &grace).await[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/conversations/{id}");
    assert_eq!(post_empty(&server, &format!("{path}/assign"), &grace).await.0, StatusCode::OK);
    let (_, before) = json_of(server.get(&path, &ws.api_key).await).await;

    // Grace's inbox is open.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in =
        browser.post(format!("{}/login", server.url)).form(&[("token", grace.as_str())]).send().await.unwrap();
    let cookie = session_cookie(&signed_in);
    let request = inbox_socket_request(&server, &cookie);
    let (mut inbox, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    // The customer types: the inbox hears it, marked as typing.
    send(&mut chat, json!({"type": "typing"})).await;
    let mut heard = Value::Null;
    for _ in 0..20 {
        let frame = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut inbox))
            .await
            .expect("a notice in time")
            .unwrap()
            .unwrap();
        let notice: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if notice["typing"] == "customer" {
            heard = notice;
            break;
        }
    }
    assert_eq!(heard["conversation_id"].as_str(), Some(id.as_str()), "{heard}");

    // Grace types: the page shows it. Alan, who does not have it, may not.
    let (status, _) = post_empty(&server, &format!("{path}/typing"), &alan).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = post_empty(&server, &format!("{path}/typing"), &grace).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let frames = frames_until(&mut chat, "typing").await;
    assert_eq!(frames.last().unwrap()["type"], "typing");
    // Nothing was stored.
    let (_, after) = json_of(server.get(&path, &ws.api_key).await).await;
    assert_eq!(after["messages"], before["messages"]);
    server.stop().await;
}

/// An agent snoozes a conversation: it shows `snoozed_until`, leaves the agent's load (routing gives
/// them the next one though their capacity is one), and wakes when the customer writes or when its
/// time comes; a snooze out of range, of a conversation not theirs, or of nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snoozed_conversation_frees_its_agent_and_wakes_when_the_customer_writes_or_its_time_comes() {
    let server = TestServer::start().await;
    let ws = server.workspace("snooze").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let body = json!({"name": "Ann", "email": "ann@example.com", "skills": ["cards"], "capacity": 1});
    let (_, ann) = server.post_json("/api/v1/agents", &ws.api_key, &body).await;
    let (ann_id, token) = (ann["id"].as_str().unwrap().to_owned(), ann["token"].as_str().unwrap().to_owned());
    let available = json!({"status": "available"});
    server.put_json(&format!("/api/v1/agents/{ann_id}/status"), &ws.api_key, &available).await;
    let say = |phone: &str, text: &str| json!({"bot": "bank", "from": {"kind": "phone", "value": phone}, "text": text, "channel": "sms"});
    let (_, first) = server.converse(&ws.api_key, &say("+14155550200", "I lost my card")).await;
    let first = format!("/api/v1/conversations/{}", first["conversation_id"].as_str().unwrap());
    let taken = conversation_when(&server, &first, &ws.api_key, |c| c["status"] == "assigned").await;
    assert_eq!(taken["assignee"], ann_id.as_str());
    let snooze = |body: Value| {
        let path = format!("{first}/snooze");
        let (server, token) = (&server, &token);
        async move { server.post_json(&path, token, &body).await }
    };
    for (body, field) in [
        (json!({}), "until:"),
        (json!({"minutes": 43_201}), "minutes:"),
        (json!({"until": "2020-01-01T00:00:00Z"}), "until:"),
        (json!({"until": "2030-01-01T00:00:00Z", "minutes": 5}), "until:"),
        (json!({"minutes": "soon"}), ""),
    ] {
        let (status, answer) = snooze(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{body}: {answer}");
    }
    let (status, snoozed) = snooze(json!({"minutes": 60})).await;
    assert_eq!(status, StatusCode::OK, "{snoozed}");
    let until = chrono::DateTime::parse_from_rfc3339(snoozed["snoozed_until"].as_str().unwrap()).unwrap();
    let ahead = until.signed_duration_since(chrono::Utc::now()).num_minutes();
    assert!((58..=60).contains(&ahead), "an hour ahead: {snoozed}");
    let (_, listed) = json_of(server.get("/api/v1/conversations?status=assigned", &token).await).await;
    assert_eq!(listed["conversations"][0]["snoozed_until"], snoozed["snoozed_until"]);

    // Ann's only seat is free while it sleeps: the next card customer is hers.
    let (_, second) = server.converse(&ws.api_key, &say("+14155550201", "my card was stolen")).await;
    let second = format!("/api/v1/conversations/{}", second["conversation_id"].as_str().unwrap());
    let taken = conversation_when(&server, &second, &ws.api_key, |c| c["status"] == "assigned").await;
    assert_eq!(taken["assignee"], ann_id.as_str(), "a snoozed conversation is out of the agent's load");
    // Someone else's conversation, or one waiting, is not hers to snooze.
    let (_, bob) =
        server.post_json("/api/v1/agents", &ws.api_key, &json!({"name": "Bob", "email": "bob@example.com"})).await;
    let (status, _) =
        server.post_json(&format!("{second}/snooze"), bob["token"].as_str().unwrap(), &json!({"minutes": 5})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The customer writes: it wakes, and their wait for an answer begins.
    server.converse(&ws.api_key, &say("+14155550200", "hello? any news?")).await;
    let (_, woken) = json_of(server.get(&first, &token).await).await;
    assert!(woken.get("snoozed_until").is_none(), "{woken}");
    let first_id = first.rsplit('/').next().unwrap();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(server.store.awaiting(&ws.id, later, 10).await.unwrap().iter().any(|(id, _)| id == first_id));

    // Snoozed again, then its time comes: the next routing pass wakes it.
    assert_eq!(snooze(json!({"minutes": 30})).await.0, StatusCode::OK);
    let now = chrono::Utc::now();
    assert!(server.store.snooze(&ws.id, first_id, &ann_id, now - chrono::Duration::seconds(1)).await.unwrap());
    server.put_json(&format!("/api/v1/agents/{ann_id}/status"), &ws.api_key, &available).await;
    let awake = conversation_when(&server, &first, &token, |c| c.get("snoozed_until").is_none()).await;
    assert_eq!(awake["status"], "assigned", "{awake}");
    // Wake at once: minutes 0.
    assert_eq!(snooze(json!({"minutes": 30})).await.0, StatusCode::OK);
    let (status, now_awake) = snooze(json!({"minutes": 0})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(now_awake.get("snoozed_until").is_none(), "{now_awake}");
    assert!(server.store.snoozes(&ws.id, 10).await.unwrap().is_empty());
    server.stop().await;
}
