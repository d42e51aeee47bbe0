//! Bot definitions: one definition served on every channel.
//!
//! [`BotDefinition`] is the bot JSON of the contract (`PUT /api/v1/bots/{name}`). [`validate`] checks
//! it field by field — the dialog parts here, the language parts by training — and [`compile`] trains
//! the recogniser.
//!
//! **Invariant:** this crate knows nothing of channels or SQL.

pub mod dialog;
pub mod template;

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Built-in slot types (the NLU's names).
pub const BUILTIN_SLOT_TYPES: [&str; 9] =
    ["number", "date", "time", "datetime", "duration", "money", "email", "phone", "text"];

/// The default reply when nothing matched.
pub const DEFAULT_FALLBACK: &str = "Sorry, I didn't get that. Could you say it another way?";

/// A bot as defined by its designer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotDefinition {
    /// Language of the bot (BCP 47 primary tag), `en` by default.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// What the bot says when a conversation starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// What happens when the bot does not understand.
    #[serde(default)]
    pub fallback: Fallback,
    /// The intents.
    pub intents: Vec<Intent>,
    /// Custom slot types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slot_types: Vec<serde_json::Value>,
    /// Confidence below which a message is out of scope (0–1); the NLU's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_scope_threshold: Option<f32>,
    /// Messages this bot should not answer, to train the out-of-scope class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_of_scope_examples: Vec<String>,
    /// Signs webhook fulfilment requests (HMAC-SHA256); required when an intent uses a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Up to six things a customer can tap (on channels with buttons) after the greeting or a reply
    /// the bot did not understand, e.g. `["Check my balance", "Opening hours"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
    /// What a spoken session (a phone call) does when the caller says nothing.
    #[serde(default, skip_serializing_if = "VoiceSettings::is_default")]
    pub voice: VoiceSettings,
    /// When the bot hands a conversation to people besides an intent's `handoff` fulfilment and
    /// `fallback.handoff_after`.
    #[serde(default, skip_serializing_if = "HandoffRules::is_default")]
    pub handoff: HandoffRules,
}

/// When a conversation goes to people, and to which queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffRules {
    /// The queue a handoff goes to unless an intent's `handoff` names another (`default`).
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Whether a customer asking for a person ("can I talk to a human?") is handed off at once
    /// (default true).
    #[serde(default = "default_true")]
    pub on_request: bool,
    /// Hand off when a message's sentiment score (VADER compound, -1 to 1) is below this; absent:
    /// never for sentiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment_below: Option<f64>,
}

fn default_queue() -> String {
    dialog::DEFAULT_QUEUE.to_owned()
}

fn default_true() -> bool {
    true
}

impl Default for HandoffRules {
    fn default() -> Self {
        HandoffRules { queue: default_queue(), on_request: true, sentiment_below: None }
    }
}

impl HandoffRules {
    fn is_default(&self) -> bool {
        *self == HandoffRules::default()
    }
}

/// Most times a silence may re-ask the pending question.
pub const MAX_SILENCE_REPROMPTS: u32 = 5;

/// How a spoken session treats a caller who says nothing: the bot asks its pending question again
/// `silence_reprompts` times in a row, then `after_silence` ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceSettings {
    /// How many silences in a row re-ask the question (0 to [`MAX_SILENCE_REPROMPTS`], default 2).
    #[serde(default = "default_silence_reprompts")]
    pub silence_reprompts: u32,
    /// What the next silence does.
    #[serde(default)]
    pub after_silence: AfterSilence,
}

fn default_silence_reprompts() -> u32 {
    2
}

impl Default for VoiceSettings {
    fn default() -> Self {
        VoiceSettings { silence_reprompts: default_silence_reprompts(), after_silence: AfterSilence::default() }
    }
}

impl VoiceSettings {
    /// Whether these are the defaults (left out when a definition is written back).
    pub fn is_default(&self) -> bool {
        *self == VoiceSettings::default()
    }
}

/// How a spoken session ends once the caller has stayed silent through every re-ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterSilence {
    /// Say a polite goodbye and end the session; the conversation stays as it was.
    #[default]
    Goodbye,
    /// Hand the conversation to agents (queue `default`), then end the session.
    Handoff,
}

/// Most quick replies offered with one reply.
pub const MAX_QUICK_REPLIES: usize = 6;

fn default_locale() -> String {
    "en".into()
}

/// The fallback settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    /// The reply.
    #[serde(default = "default_fallback")]
    pub response: String,
    /// Hand the conversation to an agent after this many consecutive misunderstandings (0: never).
    #[serde(default = "default_handoff_after")]
    pub handoff_after: u32,
}

fn default_fallback() -> String {
    DEFAULT_FALLBACK.into()
}

fn default_handoff_after() -> u32 {
    2
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback { response: default_fallback(), handoff_after: default_handoff_after() }
    }
}

/// One intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Name, e.g. `book_appointment`.
    pub name: String,
    /// Sample utterances; `{slot}` marks where a slot's value appears.
    pub utterances: Vec<String>,
    /// Slots to fill, in the order they are asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<Slot>,
    /// Asked before fulfilment, e.g. "Shall I book {date} at {time}?".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<String>,
    /// What happens once the slots are filled (and confirmed).
    pub fulfillment: Option<Fulfillment>,
}

/// One slot of an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// Name.
    pub name: String,
    /// A built-in type or a custom slot type's name.
    #[serde(rename = "type")]
    pub slot_type: String,
    /// The question that asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Asked again after an answer that does not fit; the prompt when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprompt: Option<String>,
    /// Required unless `false`.
    #[serde(default = "default_required")]
    pub required: bool,
}

fn default_required() -> bool {
    true
}

/// How an intent is fulfilled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Fulfillment {
    /// Reply with a template.
    Response {
        /// The reply, with `{slot}` placeholders.
        response: String,
    },
    /// POST the conversation state to a URL (signed) and reply with its answer.
    Webhook {
        /// The URL.
        webhook: String,
    },
    /// Hand the conversation to agents.
    Handoff {
        /// Where to.
        handoff: Handoff,
    },
}

/// A handoff target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The agent queue.
    pub queue: String,
}

/// A definition error naming the field, e.g. `intents[0].slots[1].prompt: ...` (the NLU's type, so
/// errors from validation and from training read alike).
pub use crossline_nlu::DefinitionError;

fn error(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError { field: field.into(), message: message.into() }
}

/// Whether a name is a valid bot, intent or slot name: letters, digits, `_` and `-`, 1–64 long.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub use template::placeholders;

/// Parse a definition from JSON, naming the field when the shape is wrong.
pub fn parse(json: &serde_json::Value) -> Result<BotDefinition, DefinitionError> {
    if !json.is_object() {
        return Err(error("body", "must be a bot definition object with \"intents\""));
    }
    if json.get("intents").is_none() {
        return Err(error("intents", "is required: a list of intents with utterances and a fulfillment"));
    }
    if let Some(voice) = json.get("voice") {
        check_voice(voice)?;
    }
    serde_json::from_value(json.clone()).map_err(|err| {
        let text = err.to_string();
        let field = if text.contains("untagged enum Fulfillment") {
            "fulfillment"
        } else if json.get("handoff").is_some()
            && serde_json::from_value::<HandoffRules>(json["handoff"].clone()).is_err()
        {
            "handoff"
        } else {
            "body"
        };
        let message = if field == "fulfillment" {
            "must be one of {\"response\": TEXT}, {\"webhook\": URL} or {\"handoff\": {\"queue\": NAME}}".to_owned()
        } else if field == "handoff" {
            format!(
                "must be {{\"queue\": NAME, \"on_request\": true, \"sentiment_below\": -0.6}}, each optional ({text})"
            )
        } else {
            format!("does not have the shape of a bot definition ({text})")
        };
        error(field, message)
    })
}

/// The shape of the `voice` settings, checked before deserialising so that a fault names its field.
fn check_voice(voice: &serde_json::Value) -> Result<(), DefinitionError> {
    let Some(settings) = voice.as_object() else {
        return Err(error(
            "voice",
            "must be an object such as {\"silence_reprompts\": 2, \"after_silence\": \"goodbye\"}",
        ));
    };
    for (name, value) in settings {
        match name.as_str() {
            "silence_reprompts" => {
                if value.as_u64().is_none_or(|count| count > u64::from(MAX_SILENCE_REPROMPTS)) {
                    return Err(error(
                        "voice.silence_reprompts",
                        format!(
                            "must be a whole number from 0 to {MAX_SILENCE_REPROMPTS}: how many silences in a row ask the question again"
                        ),
                    ));
                }
            }
            "after_silence" => {
                if !matches!(value.as_str(), Some("goodbye" | "handoff")) {
                    return Err(error(
                        "voice.after_silence",
                        "must be \"goodbye\" (say goodbye and end the call) or \"handoff\" (pass the conversation to agents)",
                    ));
                }
            }
            other => {
                return Err(error(
                    format!("voice.{other}"),
                    "is not a voice setting; use silence_reprompts and after_silence",
                ));
            }
        }
    }
    Ok(())
}

/// Check the dialog parts of a definition (the language parts are checked by [`compile`]).
pub fn validate(definition: &BotDefinition) -> Result<(), DefinitionError> {
    if definition.locale.trim().is_empty() || definition.locale.len() > 16 {
        return Err(error("locale", "give a language tag such as \"en\""));
    }
    if definition.greeting.as_deref().is_some_and(|greeting| greeting.trim().is_empty()) {
        return Err(error("greeting", "is empty; leave it out or give the opening line"));
    }
    if definition.fallback.response.trim().is_empty() {
        return Err(error("fallback.response", "is empty; give the reply for messages the bot does not understand"));
    }
    if !is_valid_name(&definition.handoff.queue) {
        return Err(error("handoff.queue", "use 1–64 letters, digits, _ or -"));
    }
    if definition.handoff.sentiment_below.is_some_and(|score| !(-1.0..=1.0).contains(&score)) {
        return Err(error(
            "handoff.sentiment_below",
            "must be a sentiment score from -1 (angriest) to 1, e.g. -0.6; leave it out to ignore sentiment",
        ));
    }
    if definition.fallback.handoff_after > 20 {
        return Err(error("fallback.handoff_after", "must be 0 (never) to 20"));
    }
    if definition.voice.silence_reprompts > MAX_SILENCE_REPROMPTS {
        return Err(error(
            "voice.silence_reprompts",
            format!(
                "must be a whole number from 0 to {MAX_SILENCE_REPROMPTS}: how many silences in a row ask the question again"
            ),
        ));
    }
    if definition.suggestions.len() > MAX_QUICK_REPLIES {
        return Err(error("suggestions", format!("give at most {MAX_QUICK_REPLIES}; buttons beyond that do not fit")));
    }
    for (index, suggestion) in definition.suggestions.iter().enumerate() {
        let length = suggestion.trim().chars().count();
        if length == 0 || length > 40 {
            return Err(error(format!("suggestions[{index}]"), "give 1 to 40 characters, the text of a button"));
        }
    }
    if definition.intents.is_empty() {
        return Err(error("intents", "a bot needs at least one intent"));
    }
    let uses_webhook =
        definition.intents.iter().any(|intent| matches!(intent.fulfillment, Some(Fulfillment::Webhook { .. })));
    match &definition.webhook_secret {
        Some(secret) if secret.len() < 16 => {
            return Err(error(
                "webhook_secret",
                "use at least 16 characters, e.g. the output of `openssl rand -hex 24`",
            ));
        }
        None if uses_webhook => {
            return Err(error(
                "webhook_secret",
                "is required when an intent is fulfilled by a webhook: requests are signed with it (16+ characters)",
            ));
        }
        _ => {}
    }
    let custom: BTreeSet<&str> = definition
        .slot_types
        .iter()
        .filter_map(|slot_type| slot_type.get("name").and_then(|name| name.as_str()))
        .collect();
    let mut intent_names = BTreeSet::new();
    for (index, intent) in definition.intents.iter().enumerate() {
        let at = format!("intents[{index}]");
        if !is_valid_name(&intent.name) {
            return Err(error(format!("{at}.name"), "use 1–64 letters, digits, _ or -"));
        }
        if !intent_names.insert(intent.name.as_str()) {
            return Err(error(format!("{at}.name"), format!("\"{}\" is defined twice", intent.name)));
        }
        if intent.utterances.iter().all(|utterance| utterance.trim().is_empty()) {
            return Err(error(format!("{at}.utterances"), "give at least one sample utterance"));
        }
        let mut slot_names = BTreeSet::new();
        for (slot_index, slot) in intent.slots.iter().enumerate() {
            let slot_at = format!("{at}.slots[{slot_index}]");
            if !is_valid_name(&slot.name) {
                return Err(error(format!("{slot_at}.name"), "use 1–64 letters, digits, _ or -"));
            }
            if !slot_names.insert(slot.name.as_str()) {
                return Err(error(
                    format!("{slot_at}.name"),
                    format!("\"{}\" is defined twice in this intent", slot.name),
                ));
            }
            if !BUILTIN_SLOT_TYPES.contains(&slot.slot_type.as_str()) && !custom.contains(slot.slot_type.as_str()) {
                return Err(error(
                    format!("{slot_at}.type"),
                    format!(
                        "unknown slot type \"{}\"; use a built-in type ({}) or one defined in slot_types",
                        slot.slot_type,
                        BUILTIN_SLOT_TYPES.join(", ")
                    ),
                ));
            }
            if slot.required && slot.prompt.as_deref().is_none_or(|prompt| prompt.trim().is_empty()) {
                return Err(error(format!("{slot_at}.prompt"), "a required slot needs the question that asks for it"));
            }
        }
        let check_template = |field: String, template: &str| -> Result<(), DefinitionError> {
            for piece in template::pieces(template) {
                let template::Piece::Placeholder { slot, field: part, raw } = piece else { continue };
                if !slot_names.contains(slot) {
                    return Err(error(
                        field.clone(),
                        format!("refers to {{{slot}}}, which is not a slot of this intent"),
                    ));
                }
                if part.is_some_and(|part| part != "value" && part != "text") {
                    return Err(error(
                        field.clone(),
                        format!(
                            "{raw}: write {{{slot}}} for the value as people read it, {{{slot}.value}} for the raw value or {{{slot}.text}} for the customer's words"
                        ),
                    ));
                }
            }
            Ok(())
        };
        if let Some(confirmation) = &intent.confirmation {
            check_template(format!("{at}.confirmation"), confirmation)?;
        }
        match &intent.fulfillment {
            None => {
                return Err(error(
                    format!("{at}.fulfillment"),
                    "is required: {\"response\": TEXT}, {\"webhook\": URL} or {\"handoff\": {\"queue\": NAME}}",
                ));
            }
            Some(Fulfillment::Response { response }) => {
                if response.trim().is_empty() {
                    return Err(error(format!("{at}.fulfillment.response"), "is empty"));
                }
                check_template(format!("{at}.fulfillment.response"), response)?;
            }
            Some(Fulfillment::Webhook { webhook }) => {
                if !(webhook.starts_with("https://") || webhook.starts_with("http://")) || webhook.len() < 10 {
                    return Err(error(format!("{at}.fulfillment.webhook"), "must be an http:// or https:// URL"));
                }
            }
            Some(Fulfillment::Handoff { handoff }) => {
                if !is_valid_name(&handoff.queue) {
                    return Err(error(format!("{at}.fulfillment.handoff.queue"), "use 1–64 letters, digits, _ or -"));
                }
            }
        }
    }
    Ok(())
}

/// Validate and train. CPU work: call it from a blocking thread, never on the async runtime.
pub fn compile(definition: &BotDefinition) -> Result<crossline_nlu::Recognizer, DefinitionError> {
    validate(definition)?;
    let json = serde_json::to_value(definition).map_err(|err| error("body", err.to_string()))?;
    let language: crossline_nlu::BotDefinition =
        serde_json::from_value(json).map_err(|err| error("body", format!("cannot be read for training ({err})")))?;
    crossline_nlu::train(&language)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bank() -> serde_json::Value {
        json!({
            "greeting": "Hi! How can I help?",
            "fallback": {"response": "Sorry, I didn't get that.", "handoff_after": 2},
            "intents": [
                {"name": "book_appointment",
                 "utterances": ["I want to book an appointment", "book a visit for {date}", "can I see someone {date}"],
                 "slots": [{"name": "date", "type": "date", "prompt": "What day suits you?"},
                           {"name": "time", "type": "time", "prompt": "What time?"}],
                 "confirmation": "Shall I book {date} at {time}?",
                 "fulfillment": {"response": "Booked: {date} at {time}."}},
                {"name": "card_lost", "utterances": ["I lost my card", "my card was stolen", "block my {account} card"],
                 "slots": [{"name": "account", "type": "account", "required": false}],
                 "fulfillment": {"handoff": {"queue": "cards"}}},
                {"name": "balance", "utterances": ["what's my balance", "how much money do I have"],
                 "fulfillment": {"webhook": "https://bank.example/hooks/balance"}}
            ],
            "webhook_secret": "a-secret-of-sixteen-plus",
            "slot_types": [{"name": "account", "values": [{"value": "checking", "synonyms": ["current"]}]}]
        })
    }

    #[test]
    fn the_contract_example_parses_validates_and_trains() {
        let definition = parse(&bank()).unwrap();
        assert_eq!(definition.locale, "en");
        assert_eq!(
            definition.intents[0].fulfillment,
            Some(Fulfillment::Response { response: "Booked: {date} at {time}.".into() })
        );
        assert!(matches!(definition.intents[1].fulfillment, Some(Fulfillment::Handoff { .. })));
        compile(&definition).unwrap();
        // The raw value and the customer's words are reachable too.
        let mut raw = bank();
        raw["intents"][0]["fulfillment"] = json!({"response": "Booked: {date.value} ({date.text}) at {time}."});
        assert!(parse(&raw).is_ok());
    }

    #[test]
    fn faults_are_named_by_field() {
        type Change = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|bot| bot["intents"][0]["slots"][0]["type"] = json!("dat")), "intents[0].slots[0].type"),
            (Box::new(|bot| bot["intents"][0]["slots"][1]["prompt"] = json!(" ")), "intents[0].slots[1].prompt"),
            (Box::new(|bot| bot["intents"][0]["confirmation"] = json!("Book {day}?")), "intents[0].confirmation"),
            (Box::new(|bot| bot["intents"][0]["confirmation"] = json!("Book {date.when}?")), "intents[0].confirmation"),
            (
                Box::new(|bot| bot["intents"][0]["fulfillment"] = json!({"response": "Done {when}"})),
                "intents[0].fulfillment.response",
            ),
            (
                Box::new(|bot| bot["intents"][2]["fulfillment"] = json!({"webhook": "ftp://x"})),
                "intents[2].fulfillment.webhook",
            ),
            (Box::new(|bot| bot["intents"][2]["fulfillment"] = json!({"email": "x"})), "fulfillment"),
            (
                Box::new(|bot| bot["intents"][2].as_object_mut().unwrap().remove("fulfillment").map(|_| ()).unwrap()),
                "intents[2].fulfillment",
            ),
            (Box::new(|bot| bot["intents"][1]["name"] = json!("book_appointment")), "intents[1].name"),
            (Box::new(|bot| bot["intents"][1]["utterances"] = json!([])), "intents[1].utterances"),
            (Box::new(|bot| bot["fallback"]["handoff_after"] = json!(99)), "fallback.handoff_after"),
            (Box::new(|bot| bot["intents"] = json!([])), "intents"),
            (Box::new(|bot| bot["voice"] = json!({"after_silence": "hangup"})), "voice.after_silence"),
            (Box::new(|bot| bot["voice"] = json!({"silence_reprompts": 6})), "voice.silence_reprompts"),
            (Box::new(|bot| bot["voice"] = json!({"silence_reprompts": 1.5})), "voice.silence_reprompts"),
            (Box::new(|bot| bot["voice"] = json!({"reprompts": 1})), "voice.reprompts"),
            (Box::new(|bot| bot["voice"] = json!(null)), "voice"),
            (Box::new(|bot| bot["webhook_secret"] = json!("short")), "webhook_secret"),
            (
                Box::new(|bot| {
                    bot.as_object_mut().unwrap().remove("webhook_secret");
                }),
                "webhook_secret",
            ),
            (
                Box::new(|bot| {
                    bot.as_object_mut().unwrap().remove("intents");
                }),
                "intents",
            ),
        ];
        for (change, field) in cases {
            let mut bot = bank();
            change(&mut bot);
            let err = parse(&bot).and_then(|definition| validate(&definition)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn voice_settings_default_and_parse() {
        let definition = parse(&bank()).unwrap();
        assert_eq!(definition.voice, VoiceSettings { silence_reprompts: 2, after_silence: AfterSilence::Goodbye });
        assert!(serde_json::to_value(&definition).unwrap().get("voice").is_none(), "defaults are not written back");
        let mut bot = bank();
        bot["voice"] = json!({"silence_reprompts": 0, "after_silence": "handoff"});
        let definition = parse(&bot).unwrap();
        validate(&definition).unwrap();
        assert_eq!(definition.voice, VoiceSettings { silence_reprompts: 0, after_silence: AfterSilence::Handoff });
        let mut built = definition;
        built.voice.silence_reprompts = 7;
        assert_eq!(validate(&built).unwrap_err().field, "voice.silence_reprompts");
    }

    #[test]
    fn language_faults_surface_from_training() {
        let mut bot = bank();
        bot["intents"][0]["utterances"] = json!(["book for {dat"]);
        let err = compile(&parse(&bot).unwrap()).unwrap_err();
        assert!(err.field.starts_with("intents[0].utterances"), "{err}");
    }

    #[test]
    fn placeholders_are_found() {
        assert_eq!(placeholders("Shall I book {date} at { time }?"), ["date", "time"]);
        assert!(placeholders("no slots").is_empty());
    }
}
