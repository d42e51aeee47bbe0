//! The Twilio SMS webhook: real request format and signature, TwiML answers.

use crate::bots::bank;
use crate::harness::{TestServer, json_of};
use reqwest::StatusCode;
use serde_json::json;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn configure(server: &TestServer, api_key: &str) {
    server.put_bot(api_key, "bank", &bank()).await;
    let config = json!({"account_sid": format!("AC{}", "1".repeat(32)), "auth_token": TOKEN,
                        "phone_number": "+1 415 555 0999", "bot": "bank"});
    let response = server
        .http
        .put(format!("{}/api/v1/channels/twilio", server.url))
        .bearer_auth(api_key)
        .json(&config)
        .send()
        .await
        .unwrap();
    let (status, shown) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert!(!shown.to_string().contains(TOKEN), "the auth token is never returned");
}

/// POST an SMS as Twilio does: form-encoded, signed over the URL and the sorted parameters.
async fn sms(server: &TestServer, workspace_id: &str, from: &str, body: &str, token: &str) -> (StatusCode, String) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let sid = format!("SMauto{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    sms_with_sid(server, workspace_id, from, body, token, &sid).await
}

async fn sms_with_sid(
    server: &TestServer,
    workspace_id: &str,
    from: &str,
    body: &str,
    token: &str,
    sid: &str,
) -> (StatusCode, String) {
    let url = format!("{}/hooks/{workspace_id}/twilio/sms", server.url);
    let params: Vec<(String, String)> = [
        ("ToCountry", "US"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("SmsSid", sid),
        ("SmsStatus", "received"),
        ("Body", body),
        ("To", "+14155550999"),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", "AC11111111111111111111111111111111"),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
    .collect();
    let signature = crossline_channels::twilio::signature(token, &url, &params);
    let response = server.http.post(&url).header("X-Twilio-Signature", signature).form(&params).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_booking_continues_over_sms_and_stop_unsubscribes() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    configure(&server, &ws.api_key).await;

    // In web chat (REST for now) she asks to book and says which day, and gives her number.
    let (server_ref, api_key) = (&server, &ws.api_key);
    let chat = |text: &str| {
        let body = json!({"bot": "bank", "from": {"kind": "email", "value": "ada@example.com"}, "channel": "chat", "text": text});
        async move { server_ref.converse(api_key, &body).await }
    };
    chat("I want to book an appointment").await;
    chat("tomorrow").await;
    server
        .track(
            "/v1/identify",
            &ws.write_key,
            &json!({"userId": "ada", "traits": {"email": "ada@example.com", "phone": "+14155550123"}}),
        )
        .await;

    let (status, twiml) = sms(&server, &ws.id, "+14155550123", "Hi, about my appointment", TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
    assert_eq!(
        twiml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>Picking up where we left off in chat: What time?</Message></Response>"
    );
    let (_, twiml) = sms(&server, &ws.id, "+14155550123", "3pm", TOKEN).await;
    assert!(
        twiml.contains("<Message>Shall I book ") && twiml.contains(" at 15:00?\nReply Yes / No</Message>"),
        "{twiml}"
    );
    let (_, twiml) = sms(&server, &ws.id, "+14155550123", "Yes", TOKEN).await;
    assert!(twiml.contains("<Message>Booked: "), "{twiml}");
    // Twilio retries (or an attacker replays) the same signed message: it is not answered twice.
    let (status, twiml) = sms_with_sid(&server, &ws.id, "+14155550123", "when are you open?", TOKEN, "SM0003").await;
    assert_eq!(status, StatusCode::OK);
    assert!(twiml.contains("<Message>"), "a new message id is answered: {twiml}");
    let (status, twiml) = sms_with_sid(&server, &ws.id, "+14155550123", "when are you open?", TOKEN, "SM0003").await;
    assert_eq!(
        (status, twiml.as_str()),
        (StatusCode::OK, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>")
    );

    let (_, twiml) = sms(&server, &ws.id, "+14155550123", "STOP", TOKEN).await;
    assert!(twiml.contains("unsubscribed"), "{twiml}");
    let (_, profile) =
        json_of(server.get("/api/v1/profiles/lookup?kind=phone&value=%2B14155550123", &ws.api_key).await).await;
    assert_eq!(profile["consent"]["sms"], "unsubscribed");
    assert_eq!(profile["consent_details"]["sms"]["source"], "sms_keyword");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_misrouted_webhooks_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    let (status, _) = sms(&server, &ws.id, "+14155550123", "hello", TOKEN).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the channel is not configured yet");
    configure(&server, &ws.api_key).await;

    let (status, _) = sms(&server, &ws.id, "+14155550123", "hello", "a-different-token-0123456789abcd").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a wrong signature");
    let url = format!("{}/hooks/{}/twilio/sms", server.url, ws.id);
    let response = server.http.post(&url).form(&[("From", "+14155550123"), ("Body", "hello")]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "no signature");
    let (status, _) = sms(&server, "ws_unknown", "+14155550123", "hello", TOKEN).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get("/api/v1/profiles/lookup?kind=phone&value=%2B14155550123", &ws.api_key).await.status(),
        StatusCode::NOT_FOUND,
        "refused requests created nothing"
    );

    let bad = json!({"account_sid": "nope", "auth_token": TOKEN, "phone_number": "+14155550999", "bot": "bank"});
    let response = server
        .http
        .put(format!("{}/api/v1/channels/twilio", server.url))
        .bearer_auth(&ws.api_key)
        .json(&bad)
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("account_sid:"), "{answer}");
    let missing_bot = json!({"account_sid": format!("AC{}", "1".repeat(32)), "auth_token": TOKEN, "phone_number": "+14155550999", "bot": "nobot"});
    let response = server
        .http
        .put(format!("{}/api/v1/channels/twilio", server.url))
        .bearer_auth(&ws.api_key)
        .json(&missing_bot)
        .send()
        .await
        .unwrap();
    assert!(json_of(response).await.1["error"]["message"].as_str().unwrap().starts_with("bot:"));
    let (_, shown) = json_of(server.get("/api/v1/channels/twilio", &ws.api_key).await).await;
    assert_eq!((shown["bot"].as_str(), shown["auth_token_set"].as_bool()), (Some("bank"), Some(true)));
    assert!(shown.get("auth_token").is_none());
    server.stop().await;
}

/// POST a Voice webhook as Twilio does; `speech` is what the caller said since the last prompt.
async fn voice(
    server: &TestServer,
    workspace_id: &str,
    from: &str,
    speech: Option<&str>,
    token: &str,
) -> (StatusCode, String) {
    let url = format!("{}/hooks/{workspace_id}/twilio/voice", server.url);
    let mut params: Vec<(String, String)> = [
        ("AccountSid", "AC11111111111111111111111111111111"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CA0123"),
        ("CallStatus", "in-progress"),
        ("Direction", "inbound"),
        ("From", from),
        ("To", "+14155550999"),
    ]
    .iter()
    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
    .collect();
    if let Some(speech) = speech {
        params.push(("SpeechResult".into(), speech.into()));
        params.push(("Confidence".into(), "0.93".into()));
    }
    let signature = crossline_channels::twilio::signature(token, &url, &params);
    let response = server.http.post(&url).header("X-Twilio-Signature", signature).form(&params).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

fn said(twiml: &str) -> Vec<String> {
    twiml
        .split("<Say>")
        .skip(1)
        .filter_map(|part| part.split("</Say>").next())
        .map(|text| text.replace("&apos;", "'"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_half_done_in_chat_is_finished_on_a_phone_call() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    configure(&server, &ws.api_key).await;
    let chat = json!({"bot": "bank", "from": {"kind": "email", "value": "ada@example.com"}, "channel": "chat", "text": "I want to book an appointment"});
    server.converse(&ws.api_key, &chat).await;
    let mut tomorrow = chat.clone();
    tomorrow["text"] = json!("tomorrow");
    server.converse(&ws.api_key, &tomorrow).await;
    let identify =
        json!({"userId": "ada", "traits": {"email": "ada@example.com", "phone": "+14155550123", "first_name": "Ada"}});
    server.track("/v1/identify", &ws.write_key, &identify).await;

    // She calls: the IVR knows her number and asks only for what is missing.
    let (status, twiml) = voice(&server, &ws.id, "+14155550123", None, TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
    assert!(twiml.contains("<Gather input=\"speech dtmf\""), "{twiml}");
    assert_eq!(said(&twiml)[0], "Picking up where we left off in chat: What time?");
    let (_, twiml) = voice(&server, &ws.id, "+14155550123", Some("3 pm please"), TOKEN).await;
    assert!(
        said(&twiml)[0].starts_with("Shall I book ") && said(&twiml)[0].ends_with(" at 15:00? You can say yes or no."),
        "{twiml}"
    );
    let (_, twiml) = voice(&server, &ws.id, "+14155550123", Some("yes"), TOKEN).await;
    assert!(said(&twiml)[0].starts_with("Booked: "), "{twiml}");

    // A known caller without an open conversation is greeted by name; a stranger gets the greeting.
    server
        .track(
            "/v1/identify",
            &ws.write_key,
            &json!({"userId": "grace", "traits": {"phone": "+14155550124", "first_name": "Grace"}}),
        )
        .await;
    let (_, twiml) = voice(&server, &ws.id, "+14155550124", None, TOKEN).await;
    assert_eq!(said(&twiml)[0], "Hi Grace! How can I help?");
    let (_, twiml) = voice(&server, &ws.id, "+14155550125", None, TOKEN).await;
    assert_eq!(said(&twiml)[0], "Hi! How can I help?");
    // A handoff ends the call politely until calls can be transferred.
    let (_, twiml) = voice(&server, &ws.id, "+14155550125", Some("I lost my card"), TOKEN).await;
    assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");

    let (status, _) = voice(&server, &ws.id, "+14155550123", Some("yes"), "a-different-token-0123456789abcd").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.stop().await;
}
