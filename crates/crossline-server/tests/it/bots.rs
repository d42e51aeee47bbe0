//! Bot definitions and recognition.

use crate::harness::{TestServer, json_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub fn bank() -> Value {
    json!({
        "locale": "en",
        "greeting": "Hi! How can I help?",
        "fallback": {"response": "Sorry, I didn't get that.", "handoff_after": 2},
        "intents": [
            {"name": "book_appointment",
             "utterances": ["I want to book an appointment", "book a visit for {date}", "can I come in {date}",
                            "I'd like to see an advisor", "schedule a meeting at the branch {date} at {time}"],
             "slots": [{"name": "date", "type": "date", "prompt": "What day suits you?"},
                       {"name": "time", "type": "time", "prompt": "What time?"}],
             "confirmation": "Shall I book {date} at {time}?",
             "fulfillment": {"response": "Booked: {date} at {time}."}},
            {"name": "card_lost",
             "utterances": ["I lost my card", "my card was stolen", "block my {account} card", "someone took my wallet"],
             "slots": [{"name": "account", "type": "account", "required": false}],
             "fulfillment": {"handoff": {"queue": "cards"}}},
            {"name": "opening_hours",
             "utterances": ["when are you open", "what are your opening hours", "are you open on saturday"],
             "fulfillment": {"response": "We are open 9 to 5, Monday to Friday."}}
        ],
        "slot_types": [{"name": "account", "values": [{"value": "checking", "synonyms": ["current"]}, {"value": "savings"}]}]
    })
}

async fn put(server: &TestServer, key: &str, name: &str, body: &Value) -> (StatusCode, Value) {
    json_of(
        server.http.put(format!("{}/api/v1/bots/{name}", server.url)).bearer_auth(key).json(body).send().await.unwrap(),
    )
    .await
}

async fn recognize(server: &TestServer, key: &str, name: &str, body: Value) -> (StatusCode, Value) {
    json_of(
        server
            .http
            .post(format!("{}/api/v1/bots/{name}/recognize", server.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_is_trained_versioned_and_recognises() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    let (status, stored) = put(&server, &ws.api_key, "bank", &bank()).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["version"], 1);
    let (_, fetched) = json_of(server.get("/api/v1/bots/bank", &ws.api_key).await).await;
    assert_eq!(fetched["definition"]["intents"][0]["name"], "book_appointment");

    let (status, answer) = recognize(
        &server,
        &ws.api_key,
        "bank",
        json!({"text": "can I come in next tuesday at 3pm?", "now": "2026-11-23T10:00:00Z", "time_zone": "America/New_York"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["intent"]["name"], "book_appointment", "{answer}");
    assert!(answer["intent"]["confidence"].as_f64().unwrap() > 0.3);
    // "next tuesday" on Monday 23 November is the 24th (docs/nlu.md: the next one strictly after today).
    assert_eq!(answer["slots"]["date"]["value"], "2026-11-24", "{answer}");
    assert_eq!(answer["slots"]["time"]["value"], "15:00", "{answer}");
    assert_eq!(answer["language"], "en");
    assert!(answer["sentiment"]["label"].is_string());

    let (_, lost) =
        recognize(&server, &ws.api_key, "bank", json!({"text": "I think I lost my current account card"})).await;
    assert_eq!(lost["intent"]["name"], "card_lost", "{lost}");
    assert_eq!(lost["slots"]["account"]["value"], "checking", "the canonical value, not the synonym: {lost}");

    let (_, off_topic) =
        recognize(&server, &ws.api_key, "bank", json!({"text": "what is the capital of australia"})).await;
    assert!(off_topic["intent"].is_null(), "out of scope: {off_topic}");

    // A new version is live at once; the old one is kept.
    let mut v2 = bank();
    v2["intents"].as_array_mut().unwrap().push(json!({"name": "balance",
        "utterances": ["what's my balance", "how much money do I have", "show my account balance"],
        "fulfillment": {"webhook": "https://bank.example/balance"}}));
    v2["webhook_secret"] = json!("sixteen-characters-or-more");
    let (status, stored) = put(&server, &ws.api_key, "bank", &v2).await;
    assert_eq!((status, stored["version"].as_i64()), (StatusCode::OK, Some(2)));
    let (_, balance) = recognize(&server, &ws.api_key, "bank", json!({"text": "how much money do I have?"})).await;
    assert_eq!(
        (balance["intent"]["name"].as_str(), balance["bot_version"].as_i64()),
        (Some("balance"), Some(2)),
        "{balance}"
    );
    let (_, latest) = json_of(server.get("/api/v1/bots/bank", &ws.api_key).await).await;
    assert!(latest["definition"].get("webhook_secret").is_none(), "secrets are never returned: {latest}");
    assert_eq!(latest["definition"]["webhook_secret_set"], true);
    let (_, old) = json_of(server.get("/api/v1/bots/bank?version=1", &ws.api_key).await).await;
    assert_eq!(old["definition"]["intents"].as_array().unwrap().len(), 3);
    let (_, list) = json_of(server.get("/api/v1/bots", &ws.api_key).await).await;
    assert_eq!(
        list["bots"],
        json!([{"name": "bank", "version": 2, "created_at": list["bots"][0]["created_at"], "intents": 4}])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_and_requests_name_the_field_and_change_nothing() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    let mut broken = bank();
    broken["intents"][0]["slots"][1]["type"] = json!("tme");
    let (status, answer) = put(&server, &ws.api_key, "bank", &broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("intents[0].slots[1].type:"), "{answer}");
    let mut broken = bank();
    broken["intents"][1]["utterances"] = json!(["block my {acount} card"]);
    let (status, answer) = put(&server, &ws.api_key, "bank", &broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("intents[1].utterances"), "{answer}");
    let (status, _) = put(&server, &ws.api_key, "bad name!", &bank()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let response = server
        .http
        .put(format!("{}/api/v1/bots/bank", server.url))
        .bearer_auth(&ws.api_key)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await.1["error"]["code"], "invalid_json");
    assert_eq!(
        server.get("/api/v1/bots/bank", &ws.api_key).await.status(),
        StatusCode::NOT_FOUND,
        "nothing was stored"
    );

    put(&server, &ws.api_key, "bank", &bank()).await;
    for (body, field) in [
        (json!({}), "text:"),
        (json!({"text": "hi", "time_zone": "Moon/Base"}), "time_zone:"),
        (json!({"text": "hi", "now": "tomorrow"}), "now:"),
        (json!({"text": "x".repeat(10_001)}), "text:"),
        (json!({"text": "hi", "txt": "typo"}), "txt"),
    ] {
        let (status, answer) = recognize(&server, &ws.api_key, "bank", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{field}: {answer}");
    }
    for text in ["", "🙂🙂🙂", "Ich habe meine Karte verloren 我丢了卡"] {
        let (status, answer) = recognize(&server, &ws.api_key, "bank", json!({"text": text})).await;
        assert_eq!(status, StatusCode::OK, "{text:?} gets a sensible answer: {answer}");
    }
    let other = server.workspace("other").await;
    let (status, _) = recognize(&server, &other.api_key, "bank", json!({"text": "I lost my card"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another workspace's bot is invisible");
    server.stop().await;
}
