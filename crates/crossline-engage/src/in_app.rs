//! In-app messages: what a campaign on the `in_app` channel leaves for a profile, in the shape of
//! Amazon Pinpoint's `GetInAppMessages` answer (which Amplify apps render), and what the widget
//! and apps report back (displayed, clicked, dismissed).

use crate::template::{Rendered, RenderedButton};
use chrono::{DateTime, SecondsFormat, Utc};
use crossline_store::engage::InAppMessage;
use serde_json::{Map, Value, json};

/// How long an in-app message waits to be shown.
pub const IN_APP_LIFETIME_DAYS: i64 = 30;

/// What a customer did with an in-app message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InAppEvent {
    /// It was shown (counts as the delivery's open).
    Displayed,
    /// A button with a link was followed (counts as the click; the message is not shown again).
    Clicked,
    /// It was closed (not shown again).
    Dismissed,
}

impl InAppEvent {
    /// From the name an app or the widget sends.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "displayed" => Some(InAppEvent::Displayed),
            "clicked" => Some(InAppEvent::Clicked),
            "dismissed" => Some(InAppEvent::Dismissed),
            _ => None,
        }
    }
}

/// Pinpoint's name for a layout.
pub fn pinpoint_layout(layout: &str) -> &'static str {
    match layout {
        "top_banner" => "TOP_BANNER",
        "middle_banner" => "MIDDLE_BANNER",
        "bottom_banner" => "BOTTOM_BANNER",
        // Amplify renders MOBILE_FEED as a modal and OVERLAYS full screen.
        "full_screen" => "OVERLAYS",
        _ => "MOBILE_FEED",
    }
}

const DEFAULT_BACKGROUND: &str = "#ffffff";
const DEFAULT_TEXT: &str = "#111827";
const BUTTON_BACKGROUND: &str = "#4f46e5";

/// A button: the primary one filled, the secondary one quiet.
fn button(rendered: &RenderedButton, primary: bool) -> Value {
    let (background, text) = if primary { (BUTTON_BACKGROUND, "#ffffff") } else { ("#e5e7eb", DEFAULT_TEXT) };
    let mut config = json!({
        "BackgroundColor": background,
        "BorderRadius": 8,
        "ButtonAction": rendered.action.pinpoint(),
        "Text": rendered.text,
        "TextColor": text,
    });
    if let Some(link) = &rendered.link {
        config["Link"] = json!(link);
    }
    json!({"DefaultConfig": config})
}

/// The rendered message as Pinpoint's `InAppMessage` object (`Layout`, one `Content` entry,
/// `CustomConfig`). `None` when the template is not an in-app one.
pub fn pinpoint_message(rendered: &Rendered) -> Option<Value> {
    let in_app = rendered.in_app.as_ref()?;
    let text_color = in_app.text_color.as_deref().unwrap_or(DEFAULT_TEXT);
    let mut content = Map::new();
    content.insert("BackgroundColor".into(), json!(in_app.background_color.as_deref().unwrap_or(DEFAULT_BACKGROUND)));
    if let Some(title) = &in_app.title {
        content.insert("HeaderConfig".into(), json!({"Alignment": "CENTER", "Header": title, "TextColor": text_color}));
    }
    content.insert(
        "BodyConfig".into(),
        json!({"Alignment": "CENTER", "Body": rendered.text.trim(), "TextColor": text_color}),
    );
    if let Some(image) = &in_app.image_url {
        content.insert("ImageUrl".into(), json!(image));
    }
    for (key, rendered) in ["PrimaryBtn", "SecondaryBtn"].into_iter().zip(&in_app.buttons) {
        content.insert(key.into(), button(rendered, key == "PrimaryBtn"));
    }
    let mut message = json!({
        "Layout": pinpoint_layout(in_app.layout),
        "Content": [Value::Object(content)],
    });
    if let Some(data) = &in_app.data {
        message["CustomConfig"] = Value::Object(data.clone());
    }
    Some(message)
}

/// The `GetInAppMessages` answer for the messages waiting: `{"InAppMessageCampaigns": [...]}`,
/// each with Pinpoint's fields (`Priority` 1 for transactional messages, 3 for marketing; no
/// caps, the message stops once dismissed or followed) and Crossline's `DeliveryId`, which the
/// events name.
pub fn get_in_app_messages(messages: &[InAppMessage]) -> Value {
    let campaigns: Vec<Value> = messages
        .iter()
        .map(|message| {
            json!({
                "CampaignId": message.campaign_id,
                "DeliveryId": message.delivery_id,
                "TreatmentId": "0",
                "Priority": if message.priority > 0 { 1 } else { 3 },
                "DailyCap": 0,
                "SessionCap": 0,
                "TotalCap": 0,
                "Schedule": {"EndDate": rfc3339(message.expires_at)},
                "InAppMessage": message.content,
            })
        })
        .collect();
    json!({"InAppMessageCampaigns": campaigns})
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
