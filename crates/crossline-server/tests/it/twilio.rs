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
        twiml.contains("<Message>Shall I book ") && twiml.contains(" at 3 pm?\nReply Yes / No</Message>"),
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

/// One phone call as Twilio makes it: the first webhook to the number's URL, then each answer posted
/// to the `action` of the last `<Gather>` (every request form-encoded and signed).
struct Call {
    /// The server's base URL (a call may move to another node).
    base_url: String,
    http: reqwest::Client,
    from: String,
    call_sid: String,
    /// Where the next request goes (path and query).
    next: String,
    /// The last request: its path and speech, to replay it.
    last: Option<(String, Option<String>)>,
}

impl Call {
    fn start(server: &TestServer, workspace_id: &str, from: &str, call_sid: &str) -> Self {
        Call {
            base_url: server.url.clone(),
            http: server.http.clone(),
            from: from.to_owned(),
            call_sid: call_sid.to_owned(),
            next: format!("/hooks/{workspace_id}/twilio/voice"),
            last: None,
        }
    }

    /// The caller says `speech` (None: silence, or the call opening); follows the answer's Gather.
    async fn say(&mut self, speech: Option<&str>) -> (StatusCode, String) {
        let path = self.next.clone();
        let (status, twiml) = self.post(&path, speech, TOKEN).await;
        if let Some(action) = gather_action(&twiml) {
            self.next = action;
        }
        self.last = Some((path, speech.map(str::to_owned)));
        (status, twiml)
    }

    /// The caller's side sends Twilio's other parameters (`Digits`, `DialCallStatus`) to where the
    /// last answer points: its `<Gather>` or its `<Dial>`'s action.
    async fn send(&mut self, extra: &[(&str, &str)]) -> (StatusCode, String) {
        let path = self.next.clone();
        let (status, twiml) = self.post_with(&path, None, extra, TOKEN).await;
        if let Some(action) = gather_action(&twiml).or_else(|| dial_action(&twiml)) {
            self.next = action;
        }
        (status, twiml)
    }

    /// The requests that follow go to another node (or the same node, restarted).
    fn moved_to(&mut self, server: &TestServer) {
        self.base_url.clone_from(&server.url);
    }

    /// The last request sent again, byte for byte (Twilio's retry, or a replay).
    async fn replay(&self) -> (StatusCode, String) {
        let (path, speech) = self.last.clone().expect("a request to replay");
        self.post(&path, speech.as_deref(), TOKEN).await
    }

    async fn post(&self, path: &str, speech: Option<&str>, token: &str) -> (StatusCode, String) {
        self.post_with(path, speech, &[], token).await
    }

    async fn post_with(
        &self,
        path: &str,
        speech: Option<&str>,
        extra: &[(&str, &str)],
        token: &str,
    ) -> (StatusCode, String) {
        let url = format!("{}{path}", self.base_url);
        let mut params: Vec<(String, String)> = [
            ("AccountSid", "AC11111111111111111111111111111111"),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", self.call_sid.as_str()),
            ("CallStatus", "in-progress"),
            ("Direction", "inbound"),
            ("From", self.from.as_str()),
            ("To", "+14155550999"),
        ]
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
        if let Some(speech) = speech {
            params.push(("SpeechResult".into(), speech.into()));
            params.push(("Confidence".into(), "0.93".into()));
        }
        params.extend(extra.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())));
        let signature = crossline_channels::twilio::signature(token, &url, &params);
        let response = self.http.post(&url).header("X-Twilio-Signature", signature).form(&params).send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }
}

/// The `action` of a TwiML answer's `<Gather>`, unescaped.
fn gather_action(twiml: &str) -> Option<String> {
    let start = twiml.find("<Gather ")?;
    let rest = &twiml[start..];
    let value = rest.split("action=\"").nth(1)?.split('"').next()?;
    Some(value.replace("&amp;", "&"))
}

/// The `action` of a TwiML answer's `<Dial>`, unescaped, with whom it dials.
fn dial_action(twiml: &str) -> Option<String> {
    let start = twiml.find("<Dial ")?;
    let value = twiml[start..].split("action=\"").nth(1)?.split('"').next()?;
    Some(value.replace("&amp;", "&"))
}

/// The URL Twilio asks when the dialled agent picks up (`<Number url>` or `<Sip url>`), unescaped.
fn screen_url(twiml: &str) -> Option<String> {
    let start = twiml.find("<Dial ")?;
    let rest = &twiml[start..];
    let element = rest.find("<Number ").or_else(|| rest.find("<Sip "))?;
    let value = rest[element..].split("url=\"").nth(1)?.split('"').next()?;
    Some(value.replace("&amp;", "&"))
}

/// What the answer says: inside its `<Gather>` when it listens, else everything before the hang-up.
fn said(twiml: &str) -> Vec<String> {
    let spoken = twiml.split("</Gather>").next().unwrap_or(twiml);
    spoken
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
    let mut call = Call::start(&server, &ws.id, "+14155550123", "CA0123");
    let (status, twiml) = call.say(None).await;
    assert_eq!(status, StatusCode::OK, "{twiml}");
    assert!(twiml.contains("<Gather input=\"speech dtmf\""), "{twiml}");
    assert_eq!(said(&twiml)[0], "Picking up where we left off in chat: What time?");
    let (_, twiml) = call.say(Some("3 pm please")).await;
    assert!(
        said(&twiml)[0].starts_with("Shall I book ") && said(&twiml)[0].ends_with(" at 3 pm? You can say yes or no."),
        "{twiml}"
    );
    let (_, twiml) = call.say(Some("yes")).await;
    assert!(said(&twiml)[0].starts_with("Booked: "), "{twiml}");

    // A known caller without an open conversation is greeted by name; a stranger gets the greeting.
    server
        .track(
            "/v1/identify",
            &ws.write_key,
            &json!({"userId": "grace", "traits": {"phone": "+14155550124", "first_name": "Grace"}}),
        )
        .await;
    let (_, twiml) = Call::start(&server, &ws.id, "+14155550124", "CA0124").say(None).await;
    assert_eq!(said(&twiml)[0], "Hi Grace! How can I help?");
    let mut stranger = Call::start(&server, &ws.id, "+14155550125", "CA0125");
    let (_, twiml) = stranger.say(None).await;
    assert_eq!(said(&twiml)[0], "Hi! How can I help?");
    // A handoff ends the call politely until calls can be transferred.
    let (_, twiml) = stranger.say(Some("I lost my card")).await;
    assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");

    let forged = Call::start(&server, &ws.id, "+14155550123", "CA0126");
    let (status, _) = forged.post(&forged.next, Some("yes"), "a-different-token-0123456789abcd").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.stop().await;
}

/// The profile of a phone number, its `track` timeline, and its open conversation with the bank bot
/// (status, dialog state and messages).
async fn caller_record(
    server: &TestServer,
    ws: &crate::harness::TestWorkspace,
    phone: &str,
) -> (Vec<serde_json::Value>, crossline_store::Conversation, Vec<crossline_store::ConversationMessage>) {
    let lookup = format!("/api/v1/profiles/lookup?kind=phone&value={}", phone.replace('+', "%2B"));
    let (status, profile) = json_of(server.get(&lookup, &ws.api_key).await).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    let profile_id = profile["id"].as_str().unwrap();
    let (_, events) =
        json_of(server.get(&format!("/api/v1/profiles/{profile_id}/events?limit=200&type=track"), &ws.api_key).await)
            .await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let conversation =
        server.store.open_conversation(&ws.id, profile_id, "bank", since).await.unwrap().expect("an open conversation");
    let messages = server.store.conversation_messages(&ws.id, &conversation.id).await.unwrap();
    (events["events"].as_array().unwrap().clone(), conversation, messages)
}

/// The texts of the bank bot's missed utterances.
async fn missed(server: &TestServer, api_key: &str) -> Vec<String> {
    let (status, missed) = json_of(server.get("/api/v1/bots/bank/missed?limit=100", api_key).await).await;
    assert_eq!(status, StatusCode::OK, "{missed}");
    missed["missed"].as_array().unwrap().iter().map(|item| item["text"].as_str().unwrap().to_owned()).collect()
}

fn customer_texts(messages: &[crossline_store::ConversationMessage]) -> Vec<&str> {
    messages
        .iter()
        .filter(|message| message.author.as_str() == "customer")
        .map(|message| message.text.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_on_a_call_asks_again_then_says_goodbye_and_is_never_a_missed_utterance() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    configure(&server, &ws.api_key).await;

    let mut call = Call::start(&server, &ws.id, "+14155550130", "CA0130");
    let (_, twiml) = call.say(None).await;
    assert_eq!(said(&twiml), ["Hi! How can I help?"]);
    let (_, twiml) = call.say(Some("I want to book an appointment")).await;
    assert_eq!(said(&twiml), ["What day suits you?"]);
    // Two silences: the question is asked again each time, and the call goes on listening.
    for _ in 0..2 {
        let (status, twiml) = call.say(None).await;
        assert_eq!(status, StatusCode::OK, "{twiml}");
        assert_eq!(said(&twiml), ["Sorry, I didn't hear anything. What day suits you?"], "{twiml}");
        assert!(twiml.contains("<Gather ") && !twiml.contains("<Hangup/>"), "{twiml}");
    }
    // The third: a polite goodbye, the call ends, and nobody is handed anything.
    let (_, twiml) = call.say(None).await;
    assert_eq!(said(&twiml), ["Sorry, I still can't hear you. Please call again whenever it suits you. Goodbye."]);
    assert!(twiml.ends_with("<Hangup/></Response>") && !twiml.contains("<Gather"), "{twiml}");

    let (events, conversation, messages) = caller_record(&server, &ws, "+14155550130").await;
    assert_eq!(customer_texts(&messages), ["I want to book an appointment"], "no silence is a customer message");
    assert_eq!(conversation.status.as_str(), "bot", "silence handed nothing to agents");
    assert_eq!(conversation.state["misunderstandings"], 0, "silence is no misunderstanding");
    assert_eq!(conversation.state["active"]["awaiting"]["slot"], "date", "the question is still pending");
    let received = events.iter().filter(|event| event["event"] == "message.received").count();
    assert_eq!(received, 1, "silence is no turn on the timeline");
    assert!(events.iter().all(|event| event["event"] != "conversation.handoff"));
    assert_eq!(missed(&server, &ws.api_key).await, Vec::<String>::new(), "silence is never a missed utterance");
    // Calling back, the caller hears where the conversation stands; that takes no turn either.
    let (_, twiml) = Call::start(&server, &ws.id, "+14155550130", "CA0133").say(None).await;
    assert_eq!(said(&twiml), ["Picking up where we left off in our call: What day suits you?"]);
    let (events, _, messages) = caller_record(&server, &ws, "+14155550130").await;
    assert_eq!(customer_texts(&messages), ["I want to book an appointment"]);
    assert_eq!(events.iter().filter(|event| event["event"] == "message.received").count(), 1);
    assert_eq!(missed(&server, &ws.api_key).await, Vec::<String>::new());

    // Another call: speech after a silence fills the slot, and counts the silences from zero again.
    let mut call = Call::start(&server, &ws.id, "+14155550131", "CA0131");
    call.say(None).await;
    call.say(Some("I want to book an appointment")).await;
    let (_, twiml) = call.say(None).await;
    assert_eq!(said(&twiml), ["Sorry, I didn't hear anything. What day suits you?"]);
    let (_, twiml) = call.say(Some("tomorrow")).await;
    assert_eq!(said(&twiml), ["What time?"]);
    for _ in 0..2 {
        let (_, twiml) = call.say(None).await;
        assert_eq!(said(&twiml), ["Sorry, I didn't hear anything. What time?"], "{twiml}");
    }
    let (_, twiml) = call.say(Some("3 pm")).await;
    assert!(
        said(&twiml)[0].starts_with("Shall I book ") && said(&twiml)[0].ends_with(" at 3 pm? You can say yes or no.")
    );
    // Silence at a confirmation asks for the confirmation again.
    let (_, twiml) = call.say(None).await;
    let again = &said(&twiml)[0];
    assert!(
        again.starts_with("Sorry, I didn't hear anything. Shall I book ") && again.ends_with(" You can say yes or no."),
        "{twiml}"
    );
    let (_, twiml) = call.say(Some("yes")).await;
    assert!(said(&twiml)[0].starts_with("Booked: "), "{twiml}");
    let (_, _, messages) = caller_record(&server, &ws, "+14155550131").await;
    assert_eq!(customer_texts(&messages), ["I want to book an appointment", "tomorrow", "3 pm", "yes"]);
    assert_eq!(missed(&server, &ws.api_key).await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_can_hand_a_silent_caller_to_agents_and_bad_voice_settings_are_refused() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    configure(&server, &ws.api_key).await;

    for (voice, field) in [
        (json!({"after_silence": "hang up"}), "voice.after_silence:"),
        (json!({"silence_reprompts": 9}), "voice.silence_reprompts:"),
        (json!({"silence_reprompts": -1}), "voice.silence_reprompts:"),
        (json!({"silence_reprompts": "2"}), "voice.silence_reprompts:"),
        (json!({"repeat": 2}), "voice.repeat:"),
        (json!("handoff"), "voice:"),
    ] {
        let mut bot = bank();
        bot["voice"] = voice.clone();
        let (status, answer) = server.put_json("/api/v1/bots/bank", &ws.api_key, &bot).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{voice}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{voice}: {answer}");
    }
    let mut bot = bank();
    bot["voice"] = json!({"silence_reprompts": 1, "after_silence": "handoff"});
    let (status, stored) = server.put_json("/api/v1/bots/bank", &ws.api_key, &bot).await;
    assert_eq!(status, StatusCode::OK, "{stored}");

    let mut call = Call::start(&server, &ws.id, "+14155550132", "CA0132");
    call.say(None).await;
    call.say(Some("I want to book an appointment")).await;
    let (_, twiml) = call.say(None).await;
    assert_eq!(said(&twiml), ["Sorry, I didn't hear anything. What day suits you?"]);
    let (_, twiml) = call.say(None).await;
    assert_eq!(
        said(&twiml),
        ["Let me connect you with a person who can help.", "An agent will call you back shortly. Goodbye."]
    );
    assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");
    // Twilio retries that request: the same answer, and the handoff is recorded once.
    let (_, again) = call.replay().await;
    assert_eq!(again, twiml);

    let (events, conversation, messages) = caller_record(&server, &ws, "+14155550132").await;
    assert_eq!(conversation.status.as_str(), "queued");
    assert_eq!(conversation.state["misunderstandings"], 0);
    assert_eq!(customer_texts(&messages), ["I want to book an appointment"]);
    let handoffs: Vec<_> = events.iter().filter(|event| event["event"] == "conversation.handoff").collect();
    assert_eq!(handoffs.len(), 1, "{events:?}");
    assert_eq!(handoffs[0]["properties"]["reason"], "silence");
    assert_eq!(missed(&server, &ws.api_key).await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_voice_request_is_answered_the_same_without_a_new_turn() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    configure(&server, &ws.api_key).await;
    let chat = json!({"bot": "bank", "from": {"kind": "email", "value": "ada@example.com"}, "channel": "chat", "text": "I want to book an appointment"});
    server.converse(&ws.api_key, &chat).await;
    let mut tomorrow = chat.clone();
    tomorrow["text"] = json!("tomorrow");
    server.converse(&ws.api_key, &tomorrow).await;
    let identify = json!({"userId": "ada", "traits": {"email": "ada@example.com", "phone": "+14155550123"}});
    server.track("/v1/identify", &ws.write_key, &identify).await;

    // The call's opening, which picks up the chat, sent twice.
    let mut call = Call::start(&server, &ws.id, "+14155550123", "CA0200");
    let (_, opening) = call.say(None).await;
    assert_eq!(said(&opening), ["Picking up where we left off in chat: What time?"]);
    let (status, again) = call.replay().await;
    assert_eq!((status, again.as_str()), (StatusCode::OK, opening.as_str()));
    // An answer sent three times: one turn, answered the same each time.
    let (_, answer) = call.say(Some("3 pm please")).await;
    assert!(said(&answer)[0].ends_with(" at 3 pm? You can say yes or no."), "{answer}");
    for _ in 0..2 {
        let (status, again) = call.replay().await;
        assert_eq!((status, again.as_str()), (StatusCode::OK, answer.as_str()));
    }

    let (events, _, messages) = caller_record(&server, &ws, "+14155550123").await;
    let count = |author: &str, prefix: &str| {
        messages.iter().filter(|message| message.author.as_str() == author && message.text.starts_with(prefix)).count()
    };
    assert_eq!(count("bot", "Picking up where we left off"), 1, "{messages:?}");
    assert_eq!(count("customer", "3 pm please"), 1, "{messages:?}");
    assert_eq!(count("bot", "Shall I book"), 1, "{messages:?}");
    let on_timeline = |name: &str, prefix: &str| {
        events
            .iter()
            .filter(|event| {
                event["event"] == name
                    && event["properties"]["text"].as_str().is_some_and(|text| text.starts_with(prefix))
            })
            .count()
    };
    assert_eq!(on_timeline("message.received", "3 pm please"), 1);
    assert_eq!(on_timeline("message.sent", "Shall I book"), 1);
    assert_eq!(on_timeline("message.sent", "Picking up where we left off"), 1);
    // The call goes on from where it is.
    let (_, twiml) = call.say(Some("yes")).await;
    assert!(said(&twiml)[0].starts_with("Booked: "), "{twiml}");

    // A stranger's greeting sent twice stores nothing; a handoff sent twice is one handoff.
    let mut stranger = Call::start(&server, &ws.id, "+14155550127", "CA0201");
    let (_, greeting) = stranger.say(None).await;
    assert_eq!(stranger.replay().await.1, greeting);
    assert_eq!(
        server.get("/api/v1/profiles/lookup?kind=phone&value=%2B14155550127", &ws.api_key).await.status(),
        StatusCode::NOT_FOUND
    );
    let (_, handoff) = stranger.say(Some("I lost my card")).await;
    assert!(handoff.ends_with("<Hangup/></Response>"), "{handoff}");
    assert_eq!(stranger.replay().await.1, handoff);
    let (events, conversation, messages) = caller_record(&server, &ws, "+14155550127").await;
    assert_eq!(conversation.status.as_str(), "queued");
    assert_eq!(customer_texts(&messages), ["I lost my card"]);
    assert_eq!(events.iter().filter(|event| event["event"] == "conversation.handoff").count(), 1);
    assert_eq!(events.iter().filter(|event| event["event"] == "message.received").count(), 1);
    server.stop().await;
}

/// A call's first two requests on `first`; the second is replayed on `second` (another node, or the
/// same one restarted), which then takes the call's next answer.
async fn replay_on_another_node(
    first: &TestServer,
    second: &TestServer,
    ws: &crate::harness::TestWorkspace,
    from: &str,
) {
    let mut call = Call::start(first, &ws.id, from, &format!("CA{}", from.trim_start_matches('+')));
    call.say(None).await;
    let (_, answer) = call.say(Some("I want to book an appointment")).await;
    assert_eq!(said(&answer), ["What day suits you?"]);
    call.moved_to(second);
    let (status, again) = call.replay().await;
    assert_eq!((status, again.as_str()), (StatusCode::OK, answer.as_str()));
    let (_, twiml) = call.say(Some("tomorrow")).await;
    assert_eq!(said(&twiml), ["What time?"]);
    let (events, _, messages) = caller_record(second, ws, from).await;
    assert_eq!(customer_texts(&messages), ["I want to book an appointment", "tomorrow"]);
    assert_eq!(events.iter().filter(|event| event["event"] == "message.received").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_answered_from_the_store_after_a_restart_and_on_another_node() {
    use crossline_store::DynStore;
    use std::sync::Arc;
    let bus = || -> crossline_bus::DynBus { Arc::new(crossline_bus::memory::MemoryBus::new()) };

    // SQLite: the node restarts between the request and its replay, so nothing is left in memory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crossline.db");
    let sqlite = || async { Arc::new(crossline_store::sqlite::SqliteStore::open(&path).await.unwrap()) as DynStore };
    let first = TestServer::start_with(sqlite().await, bus()).await;
    let ws = first.workspace("bank").await;
    configure(&first, &ws.api_key).await;
    let mut call = Call::start(&first, &ws.id, "+14155550140", "CA0300");
    call.say(None).await;
    let (_, answer) = call.say(Some("I want to book an appointment")).await;
    first.stop().await;
    let restarted = TestServer::start_with(sqlite().await, bus()).await;
    call.moved_to(&restarted);
    assert_eq!(call.replay().await.1, answer);
    let (_, twiml) = call.say(Some("tomorrow")).await;
    assert_eq!(said(&twiml), ["What time?"]);
    let (_, _, messages) = caller_record(&restarted, &ws, "+14155550140").await;
    assert_eq!(customer_texts(&messages), ["I want to book an appointment", "tomorrow"]);
    restarted.stop().await;

    // PostgreSQL: two nodes share the store; the replay reaches the node that did not take the turn.
    let Ok(database_url) = std::env::var("CROSSLINE_TEST_DATABASE_URL") else {
        eprintln!("CROSSLINE_TEST_DATABASE_URL is not set: the two-node part of the voice replay test did not run");
        return;
    };
    crossline_store::postgres::drop_schemas(&database_url, "voice_replay_").await;
    let schema = format!("voice_replay_{}_{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let postgres = || async {
        Arc::new(
            crossline_store::postgres::PgStore::connect_in_schema(&database_url, Some(&schema))
                .await
                .expect("PostgreSQL reachable"),
        ) as DynStore
    };
    let (a, b) =
        (TestServer::start_with(postgres().await, bus()).await, TestServer::start_with(postgres().await, bus()).await);
    let ws = a.workspace("bank").await;
    configure(&a, &ws.api_key).await;
    replay_on_another_node(&a, &b, &ws, "+14155550141").await;
    a.stop().await;
    b.stop().await;
    crossline_store::postgres::drop_schemas(&database_url, &schema).await;
}

/// The caller's conversations with the bank bot, newest first, as the store has them.
async fn calls_of(
    server: &TestServer,
    ws: &crate::harness::TestWorkspace,
    phone: &str,
) -> Vec<crossline_store::Conversation> {
    let identity = crossline_core::Identity { kind: crossline_core::IdentityKind::Phone, value: phone.into() };
    let profile = server.store.lookup(&ws.id, &identity).await.unwrap().expect("the caller's profile");
    let filter = crossline_store::agents::ConversationFilter {
        statuses: vec![
            crossline_core::ConversationStatus::Queued,
            crossline_core::ConversationStatus::Assigned,
            crossline_core::ConversationStatus::Resolved,
        ],
        profile_id: Some(profile.id),
        limit: 10,
        ..Default::default()
    };
    server.store.list_conversations(&ws.id, &filter).await.unwrap()
}

/// The caller's conversation once routing gave it to `agent` (within 5 s).
async fn assigned_to(server: &TestServer, ws: &crate::harness::TestWorkspace, phone: &str, agent: &str) {
    for _ in 0..100 {
        if calls_of(server, ws, phone)
            .await
            .iter()
            .any(|c| c.assignee.as_deref() == Some(agent) && c.status.as_str() == "assigned")
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, agents) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    panic!("{phone}'s call was not given to {agent}: {:?}; agents: {agents}", calls_of(server, ws, phone).await);
}

/// A caller the bot hands off holds for a person when someone who takes calls is available: the
/// agent routing gives the call to is dialled (`<Dial>` to their number or SIP address); an agent
/// who misses it is set away and the call waits for the next; after the talk the caller scores it
/// by keypad (`csat.submitted`). Pressing 1 on hold, or holding too long, ends in a call back; with
/// nobody who takes calls the caller is promised one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_holds_for_an_agent_is_put_through_and_scores_the_call_by_keypad() {
    let server = TestServer::start().await;
    let ws = server.workspace("bank").await;
    configure(&server, &ws.api_key).await;
    let hung_up = |twiml: &str| twiml.ends_with("<Hangup/></Response>");

    // Nobody takes calls: a call back is promised at once.
    let mut call = Call::start(&server, &ws.id, "+14155550140", "CA0140");
    call.say(None).await;
    let (_, twiml) = call.say(Some("I lost my card")).await;
    assert_eq!(
        said(&twiml).last().map(String::as_str),
        Some("An agent will call you back shortly. Goodbye."),
        "{twiml}"
    );
    assert!(hung_up(&twiml), "{twiml}");
    let waiting = &calls_of(&server, &ws, "+14155550140").await[0];
    assert_eq!(waiting.status.as_str(), "queued");
    let resolve = format!("/api/v1/conversations/{}/resolve", waiting.id);
    assert_eq!(server.post_json(&resolve, &ws.api_key, &json!({})).await.0, StatusCode::OK);

    // Agents who take calls: a number, or a SIP address; bad ones are refused, naming the field.
    for (body, field) in [
        (json!({"name": "X", "email": "x@example.com", "phone": "555-0100"}), "phone:"),
        (json!({"name": "X", "email": "x@example.com", "phone": "sip:a b@pbx"}), "phone:"),
        (json!({"name": "X", "email": "x@example.com", "calls": 1}), "calls:"),
        (json!({"name": "X", "email": "x@example.com", "phone": "+14155550100", "calls": 6}), "calls:"),
    ] {
        let (status, answer) = server.post_json("/api/v1/agents", &ws.api_key, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{body}: {answer}");
    }
    let new = json!({"name": "Pat", "email": "pat@example.com", "skills": ["cards"], "phone": "+14155550177"});
    let (status, pat) = server.post_json("/api/v1/agents", &ws.api_key, &new).await;
    assert_eq!(
        (status, pat["calls"].as_u64()),
        (StatusCode::CREATED, Some(1)),
        "a phone takes one call by default: {pat}"
    );
    let pat_id = pat["id"].as_str().unwrap().to_owned();
    let new = json!({"name": "Sam", "email": "sam@example.com", "skills": ["cards"]});
    let (_, sam) = server.post_json("/api/v1/agents", &ws.api_key, &new).await;
    let sam_id = sam["id"].as_str().unwrap().to_owned();
    let change = json!({"name": "Sam", "skills": ["cards"], "phone": "sip:sam@pbx.example;transport=tls"});
    let (status, changed) = server.put_json(&format!("/api/v1/agents/{sam_id}"), &ws.api_key, &change).await;
    assert_eq!(
        (status, changed["calls"].as_u64(), changed["email"].as_str()),
        (StatusCode::OK, Some(1), Some("sam@example.com")),
        "{changed}"
    );
    let (status, _) =
        server.put_json(&format!("/api/v1/agents/{sam_id}"), sam["token"].as_str().unwrap(), &change).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an agent does not change agents");
    let available = json!({"status": "available"});
    server.put_json(&format!("/api/v1/agents/{pat_id}/status"), &ws.api_key, &available).await;

    // A caller hands off: on hold, with the way to a call back said; routing gives the call to Pat.
    let phone = "+14155550141";
    let mut call = Call::start(&server, &ws.id, phone, "CA0141");
    call.say(None).await;
    let (_, twiml) = call.say(Some("I lost my card")).await;
    assert_eq!(
        said(&twiml).last().map(String::as_str),
        Some("Please hold while I find someone to help you. Press 1 at any time to get a call back instead."),
        "{twiml}"
    );
    assert!(twiml.contains("<Gather input=\"dtmf\" numDigits=\"1\"") && twiml.contains("<Pause length="), "{twiml}");
    assert!(call.next.contains("&hold="), "the hold loop: {}", call.next);
    assigned_to(&server, &ws, phone, &pat_id).await;
    // The next request of the hold loop puts the call through to Pat's phone.
    let (_, twiml) = call.send(&[]).await;
    assert!(twiml.contains("<Say>Connecting you to an agent now.</Say><Dial "), "{twiml}");
    assert!(twiml.contains(">+14155550177</Number></Dial>"), "{twiml}");
    assert!(call.next.contains(&format!("dialed={pat_id}")), "{}", call.next);
    // Pat does not answer: the call waits again (Pat is away now) and the caller holds on.
    let (_, twiml) = call.send(&[("DialCallStatus", "no-answer"), ("DialCallDuration", "0")]).await;
    assert_eq!(said(&twiml), ["The agent could not take your call. Please keep holding."], "{twiml}");
    let (_, pat_now) = json_of(server.get("/api/v1/agents", &ws.api_key).await).await;
    let pat_status =
        pat_now["agents"].as_array().unwrap().iter().find(|a| a["id"] == pat_id.as_str()).unwrap()["status"].clone();
    assert_eq!(pat_status, "away", "an agent who missed a call is not offered the next");
    assert_eq!(calls_of(&server, &ws, phone).await[0].status.as_str(), "queued");
    // Sam becomes available and gets it; the call goes to his SIP address. His voicemail picks up
    // (nobody presses 1 when asked to take the call): not a talk — he is set away, the call waits.
    server.put_json(&format!("/api/v1/agents/{sam_id}/status"), &ws.api_key, &available).await;
    assigned_to(&server, &ws, phone, &sam_id).await;
    let (_, twiml) = call.send(&[]).await;
    assert!(twiml.contains(">sip:sam@pbx.example;transport=tls</Sip>"), "{twiml}");
    let screen = screen_url(&twiml).expect("the agent is asked to take the call");
    // Twilio asks from the agent's leg: its own CallSid.
    let sams_leg = Call::start(&server, &ws.id, phone, "CA0141sam");
    let (_, asked) = sams_leg.post_with(&screen, None, &[], TOKEN).await;
    assert_eq!(said(&asked), ["A customer is waiting for you on this call. Press 1 to take it."], "{asked}");
    let (_, twiml) = call.send(&[("DialCallStatus", "completed"), ("DialCallDuration", "31")]).await;
    assert_eq!(said(&twiml), ["The agent could not take your call. Please keep holding."], "voicemail: {twiml}");
    assert_eq!(calls_of(&server, &ws, phone).await[0].status.as_str(), "queued");
    // Back available, Sam gets it again, presses 1, and they talk; Sam hangs up: the conversation is
    // resolved by Sam and the caller asked for a score.
    server.put_json(&format!("/api/v1/agents/{sam_id}/status"), &ws.api_key, &available).await;
    assigned_to(&server, &ws, phone, &sam_id).await;
    let (_, twiml) = call.send(&[]).await;
    let screen = screen_url(&twiml).expect("the agent is asked to take the call");
    let (_, connect) = sams_leg.post_with(&screen, None, &[("Digits", "1")], TOKEN).await;
    assert!(connect.ends_with("<Response></Response>"), "pressing 1 connects: {connect}");
    let (_, twiml) = call.send(&[("DialCallStatus", "completed"), ("DialCallDuration", "95")]).await;
    assert_eq!(
        said(&twiml),
        ["Before you go: how did we do? Press a number from 1 for poor to 5 for great."],
        "{twiml}"
    );
    let (_, twiml) = call.send(&[("Digits", "4")]).await;
    assert_eq!(said(&twiml), ["Thank you for your feedback!"], "{twiml}");
    assert!(hung_up(&twiml), "{twiml}");
    let conversation = &calls_of(&server, &ws, phone).await[0];
    assert_eq!((conversation.status.as_str(), conversation.assignee.as_deref()), ("resolved", Some(sam_id.as_str())));
    let (_, events) = json_of(
        server
            .get(&format!("/api/v1/profiles/{}/events?limit=200&type=track", conversation.profile_id), &ws.api_key)
            .await,
    )
    .await;
    let events = events["events"].as_array().unwrap();
    let named = |name: &str| events.iter().filter(|event| event["event"] == name).cloned().collect::<Vec<_>>();
    let requeued = named("conversation.requeued");
    assert_eq!(requeued.len(), 2, "{events:?}");
    let missed: Vec<_> = requeued
        .iter()
        .map(|event| (event["properties"]["reason"].as_str(), event["properties"]["from_agent_id"].as_str()))
        .collect();
    assert!(missed.contains(&(Some("call_missed"), Some(pat_id.as_str()))), "{missed:?}");
    assert!(missed.contains(&(Some("call_missed"), Some(sam_id.as_str()))), "{missed:?}");
    let resolved = named("conversation.resolved");
    assert_eq!(resolved[0]["properties"]["csat_asked"], true);
    let scored = named("csat.submitted");
    assert_eq!(scored.len(), 1, "{events:?}");
    assert_eq!(
        (scored[0]["properties"]["score"].as_u64(), scored[0]["properties"]["agent_id"].as_str()),
        (Some(4), Some(sam_id.as_str()))
    );
    assert_eq!(scored[0]["channel"], "voice");

    // Sam is free again: the next caller holds, and presses 1 for a call back (whoever routing
    // gave the call to meanwhile: the caller asked for a call back).
    let mut call = Call::start(&server, &ws.id, "+14155550142", "CA0142");
    call.say(None).await;
    let (_, twiml) = call.say(Some("I lost my card")).await;
    assert!(twiml.contains("Please hold"), "{twiml}");
    let (_, twiml) = call.send(&[("Digits", "1")]).await;
    assert_eq!(said(&twiml), ["Thank you. An agent will call you back shortly. Goodbye."], "{twiml}");
    assert!(hung_up(&twiml));

    // Nobody who suits the queue takes calls (it asks a skill Sam lacks): a call back at once, and
    // the conversation waits. A hold loop request older than ten minutes (as Twilio would send
    // had the caller held that long) ends in a call back too; one Twilio did not sign is refused.
    let (status, _) = server.put_json("/api/v1/queues/cards", &ws.api_key, &json!({"skills": ["vip"]})).await;
    assert_eq!(status, StatusCode::OK);
    let phone = "+14155550143";
    let mut call = Call::start(&server, &ws.id, phone, "CA0143");
    call.say(None).await;
    let (_, twiml) = call.say(Some("I lost my card")).await;
    assert_eq!(
        said(&twiml).last().map(String::as_str),
        Some("An agent will call you back shortly. Goodbye."),
        "{twiml}"
    );
    let waiting = calls_of(&server, &ws, phone).await[0].clone();
    assert_eq!(waiting.status.as_str(), "queued", "it waits for the call back");
    let long_ago = (chrono::Utc::now() - chrono::Duration::minutes(11)).timestamp();
    let hold = format!("/hooks/{}/twilio/voice?turn=3&hold={long_ago}&cnv={}", ws.id, waiting.id);
    let (_, twiml) = call.post_with(&hold, None, &[], TOKEN).await;
    assert_eq!(said(&twiml), ["Sorry to keep you waiting. An agent will call you back shortly. Goodbye."], "{twiml}");
    let (status, _) = call.post_with(&hold, None, &[], "not-the-token").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A call back is an ordinary conversation: routed to any agent who suits the queue, Bob (no
    // phone) included.
    server.put_json(&format!("/api/v1/agents/{sam_id}/status"), &ws.api_key, &json!({"status": "offline"})).await;
    let (status, _) = server.put_json("/api/v1/queues/cards", &ws.api_key, &json!({"skills": ["cards"]})).await;
    assert_eq!(status, StatusCode::OK);
    let new = json!({"name": "Bob", "email": "bob@example.com", "skills": ["cards"]});
    let (_, bob) = server.post_json("/api/v1/agents", &ws.api_key, &new).await;
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    server.put_json(&format!("/api/v1/agents/{bob_id}/status"), &ws.api_key, &available).await;
    assigned_to(&server, &ws, phone, &bob_id).await;
    server.stop().await;
}
