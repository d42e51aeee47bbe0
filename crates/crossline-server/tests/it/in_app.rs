//! In-app messages: a campaign on the `in_app` channel leaves messages that an app fetches in the
//! shape of Pinpoint's `GetInAppMessages` and the widget fetches over the chat socket; displays,
//! clicks and dismissals are recorded on the delivery and the profile.

use crate::bots::bank;
use crate::harness::{TestServer, json_of, stats_when_completed};
use crate::webchat::{configure_webchat, connect, frames_until, send};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn template() -> Value {
    json!({"name": "Upgrade offer", "channel": "in_app", "layout": "modal",
        "title": "Hi {{ profile.traits.first_name }}", "body": "Pro is 20% off this week.",
        "image_url": "https://cdn.example.com/pro.png", "background_color": "#fefce8", "text_color": "#111",
        "buttons": [
            {"text": "See plans", "action": "link", "link": "{{ profile.traits.promo | default: 'https://example.com/pricing' }}"},
            {"text": "Not now"}],
        "data": {"screen": "pricing"}})
}

async fn profile_id(server: &TestServer, api_key: &str, kind: &str, value: &str) -> String {
    let (status, profile) =
        json_of(server.get(&format!("/api/v1/profiles/lookup?kind={kind}&value={value}"), api_key).await).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    profile["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_in_app_campaign_is_fetched_in_pinpoints_shape_and_its_displays_and_clicks_count() {
    let server = TestServer::start().await;
    let ws = server.workspace("in-app").await;
    let other = server.workspace("in-app-other").await;
    let key = ws.api_key.as_str();
    // Bad templates are refused naming the field.
    for (change, field) in [
        (json!({"layout": "popup"}), "layout"),
        (json!({"buttons": [{"text": "Go", "action": "link"}]}), "buttons[0]"),
        (json!({"buttons": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}), "buttons"),
        (json!({"background_color": "red; position: fixed"}), "background_color"),
        (json!({"data": {"n": 1}}), "data"),
    ] {
        let mut bad = template();
        bad.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let (status, refused) = server.post_json("/api/v1/templates", key, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(refused["error"]["message"].as_str().unwrap().starts_with(field), "{field}: {refused}");
    }

    // Bob's promo trait (anyone with the write key can set traits) renders a javascript: link:
    // his message fails, nothing is left for him. Cy unsubscribed from in-app messages.
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "first_name": "Ann"}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "pro", "first_name": "Bob", "promo": "javascript:alert(1)"}},
        {"type": "identify", "userId": "cy", "traits": {"plan": "pro", "first_name": "Cy"}}]});
    assert_eq!(server.track("/v1/batch", &ws.write_key, &batch).await.status(), StatusCode::OK);
    let (ann, bob, cy) = (
        profile_id(&server, key, "user_id", "ann").await,
        profile_id(&server, key, "user_id", "bob").await,
        profile_id(&server, key, "user_id", "cy").await,
    );
    let consent = format!("/api/v1/profiles/{cy}/consent");
    assert_eq!(server.put_json(&consent, key, &json!({"in_app": "unsubscribed"})).await.0, StatusCode::OK);
    let (_, segment) = server
        .post_json(
            "/api/v1/segments",
            key,
            &json!({"name": "Pro", "filter": {"trait": "plan", "op": "eq", "value": "pro"}}),
        )
        .await;
    let (status, template) = server.post_json("/api/v1/templates", key, &template()).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let campaign = json!({"name": "Upgrade", "segment_id": segment["id"], "channel": "in_app",
        "template_id": template["id"], "schedule": "now"});
    let (status, campaign) = server.post_json("/api/v1/campaigns", key, &campaign).await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let campaign_id = campaign["id"].as_str().unwrap();
    let stats = stats_when_completed(&server, key, campaign_id).await;
    assert_eq!(
        (stats["sent"].as_u64(), stats["failed"].as_u64(), stats["suppressed_by"]["unsubscribed"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{stats}"
    );

    let path = format!("/api/v1/profiles/{ann}/in-app-messages");
    let (status, fetched) = json_of(server.get(&path, key).await).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    let campaigns = fetched["InAppMessageCampaigns"].as_array().unwrap();
    assert_eq!(campaigns.len(), 1, "{fetched}");
    let message = &campaigns[0];
    assert_eq!((message["CampaignId"].as_str(), message["Priority"].as_u64()), (Some(campaign_id), Some(3)));
    assert!(message["Schedule"]["EndDate"].as_str().unwrap().ends_with('Z'), "{message}");
    let in_app = &message["InAppMessage"];
    assert_eq!(in_app["Layout"], "MOBILE_FEED");
    assert_eq!(in_app["CustomConfig"], json!({"screen": "pricing"}));
    let content = &in_app["Content"][0];
    assert_eq!(content["HeaderConfig"]["Header"], "Hi Ann");
    assert_eq!(content["BodyConfig"]["Body"], "Pro is 20% off this week.");
    assert_eq!(content["BodyConfig"]["TextColor"], "#111");
    assert_eq!(
        (content["BackgroundColor"].as_str(), content["ImageUrl"].as_str()),
        (Some("#fefce8"), Some("https://cdn.example.com/pro.png"))
    );
    let primary = &content["PrimaryBtn"]["DefaultConfig"];
    assert_eq!(
        (primary["ButtonAction"].as_str(), primary["Link"].as_str(), primary["Text"].as_str()),
        (Some("LINK"), Some("https://example.com/pricing"), Some("See plans"))
    );
    assert_eq!(content["SecondaryBtn"]["DefaultConfig"]["ButtonAction"], "CLOSE");
    for nobody in [&bob, &cy] {
        let (_, none) = json_of(server.get(&format!("/api/v1/profiles/{nobody}/in-app-messages"), key).await).await;
        assert_eq!(none["InAppMessageCampaigns"], json!([]), "{none}");
    }
    // Machines only: the write key and another workspace's key are refused.
    assert_eq!(server.get(&path, &ws.write_key).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.get(&path, &other.api_key).await.status(), StatusCode::NOT_FOUND);

    let delivery = message["DeliveryId"].as_str().unwrap();
    let events = |profile: &str| format!("/api/v1/profiles/{profile}/in-app-messages/{delivery}/events");
    let (status, _) = server.post_json(&events(&ann), key, &json!({"event": "opened"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.post_json(&events(&bob), key, &json!({"event": "clicked"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not Bob's message");
    for event in ["displayed", "displayed", "clicked"] {
        let (status, body) = server.post_json(&events(&ann), key, &json!({"event": event})).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{event}: {body}");
    }
    let (status, _) = server.post_json(&events(&ann), key, &json!({"event": "dismissed"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a followed message no longer waits");
    let (_, after) = json_of(server.get(&path, key).await).await;
    assert_eq!(after["InAppMessageCampaigns"], json!([]), "not shown again once followed");
    let stats = stats_when_completed(&server, key, campaign_id).await;
    assert_eq!((stats["opened"].as_u64(), stats["clicked"].as_u64()), (Some(1), Some(1)), "{stats}");
    let (_, timeline) = json_of(server.get(&format!("/api/v1/profiles/{ann}/events"), key).await).await;
    let names: Vec<&str> = timeline["events"].as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(names.contains(&"delivery.opened") && names.contains(&"delivery.clicked"), "{names:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_widget_fetches_the_visitors_in_app_messages_over_the_chat_socket() {
    let server = TestServer::start().await;
    let ws = server.workspace("in-app-chat").await;
    let key = ws.api_key.as_str();
    server.put_bot(key, "bank", &bank()).await;
    assert_eq!(configure_webchat(&server, key, &json!({"bot": "bank"})).await.0, StatusCode::OK);
    let (visitor, stranger) = ("in-app-visitor-00001", "in-app-stranger-0001");
    for who in [visitor, stranger] {
        let mut socket = connect(&server, &ws.id, who).await;
        send(&mut socket, json!({"type": "hello", "seen": 0})).await;
        send(&mut socket, json!({"type": "in_app_fetch"})).await;
        let frames = frames_until(&mut socket, "in_app_messages").await;
        assert_eq!(frames.last().unwrap()["campaigns"]["InAppMessageCampaigns"], json!([]), "nothing yet");
        send(&mut socket, json!({"type": "message", "id": "m1", "text": "hello"})).await;
        frames_until(&mut socket, "ack").await;
    }
    let visitor_profile = profile_id(&server, key, "chat_visitor_id", visitor).await;
    // Both chatted, so both get the banner; each socket sees and acts on its own only.
    let segment = json!({"name": "Chatters", "filter": {"event": "message.received"}});
    let (_, segment) = server.post_json("/api/v1/segments", key, &segment).await;
    let template = json!({"name": "Banner", "channel": "in_app", "layout": "top_banner", "body": "Free shipping today",
        "buttons": [{"text": "Open the app", "action": "deep_link", "link": "shop://deals"}]});
    let (_, template) = server.post_json("/api/v1/templates", key, &template).await;
    let campaign = json!({"name": "Banner", "segment_id": segment["id"], "channel": "in_app",
        "template_id": template["id"], "schedule": "now", "kind": "transactional"});
    let (status, campaign) = server.post_json("/api/v1/campaigns", key, &campaign).await;
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let stats = stats_when_completed(&server, key, campaign["id"].as_str().unwrap()).await;
    assert_eq!(stats["sent"].as_u64(), Some(2), "{stats}");

    let mut socket = connect(&server, &ws.id, visitor).await;
    send(&mut socket, json!({"type": "in_app_fetch"})).await;
    let frames = frames_until(&mut socket, "in_app_messages").await;
    let campaigns = frames.last().unwrap()["campaigns"]["InAppMessageCampaigns"].clone();
    assert_eq!(campaigns.as_array().unwrap().len(), 1, "{campaigns}");
    let message = &campaigns[0];
    assert_eq!(
        (message["InAppMessage"]["Layout"].as_str(), message["Priority"].as_u64()),
        (Some("TOP_BANNER"), Some(1))
    );
    let primary = &message["InAppMessage"]["Content"][0]["PrimaryBtn"]["DefaultConfig"];
    assert_eq!((primary["ButtonAction"].as_str(), primary["Link"].as_str()), (Some("DEEP_LINK"), Some("shop://deals")));
    let delivery = message["DeliveryId"].as_str().unwrap().to_owned();

    // The stranger cannot act on the visitor's message.
    let mut strangers = connect(&server, &ws.id, stranger).await;
    send(&mut strangers, json!({"type": "in_app_event", "delivery_id": delivery, "event": "dismissed"})).await;
    let answer = frames_until(&mut strangers, "in_app_recorded").await;
    assert_eq!(answer.last().unwrap()["ok"], false);
    send(&mut socket, json!({"type": "in_app_event", "delivery_id": delivery, "event": "displayed"})).await;
    assert_eq!(frames_until(&mut socket, "in_app_recorded").await.last().unwrap()["ok"], true);
    send(&mut socket, json!({"type": "in_app_event", "delivery_id": delivery, "event": "dismissed"})).await;
    assert_eq!(frames_until(&mut socket, "in_app_recorded").await.last().unwrap()["ok"], true);
    send(&mut socket, json!({"type": "in_app_fetch"})).await;
    let frames = frames_until(&mut socket, "in_app_messages").await;
    assert_eq!(frames.last().unwrap()["campaigns"]["InAppMessageCampaigns"], json!([]), "dismissed");
    let (_, timeline) = json_of(server.get(&format!("/api/v1/profiles/{visitor_profile}/events"), key).await).await;
    let names: Vec<&str> = timeline["events"].as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(names.contains(&"delivery.opened") && names.contains(&"delivery.dismissed"), "{names:?}");
    server.stop().await;
}
