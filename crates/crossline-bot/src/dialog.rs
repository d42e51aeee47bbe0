//! The dialog manager: one conversation turn as a pure function of the bot, the conversation's
//! state and what the customer said. The caller recognises the text, loads and stores the state,
//! and delivers the replies on the customer's channel.
//!
//! A turn does, in order: answer a pending confirmation; fill the slot being asked (or switch to
//! another intent the customer clearly asked for, keeping the first to resume later); start the
//! recognised intent; then ask for the next missing slot, ask for confirmation, or fulfil.
//!
//! A silence (a spoken prompt that got no answer) is not a turn: [`silence`] decides what to say
//! from the state without changing it.

use crate::template::render;
use crate::{AfterSilence, BotDefinition, Fulfillment, Intent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A recognised intent must be at least this sure to interrupt a form being filled.
pub const SWITCH_CONFIDENCE: f32 = 0.6;

/// Said when a conversation goes to agents.
pub const HANDOFF_REPLY: &str = "Let me connect you with a person who can help.";

/// Asked when nothing is pending and the bot has no greeting.
pub const OPEN_QUESTION: &str = "How can I help?";

/// Said before the question asked again after a silence.
pub const SILENCE_PREFIX: &str = "Sorry, I didn't hear anything.";

/// Said when the caller stayed silent through every re-ask and the session ends.
pub const SILENCE_GOODBYE: &str = "Sorry, I still can't hear you. Please call again whenever it suits you. Goodbye.";

/// The queue a conversation goes to when the bot hands it off by itself (misunderstandings, silence).
pub const DEFAULT_QUEUE: &str = "default";

/// Where a conversation stands between turns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DialogState {
    /// The intent being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveIntent>,
    /// Intents interrupted by another, most recent last; resumed when the current one is done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<ActiveIntent>,
    /// Consecutive turns the bot did not understand.
    #[serde(default)]
    pub misunderstandings: u32,
    /// The channel of the customer's previous message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_channel: Option<String>,
}

/// An intent in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveIntent {
    /// Its name.
    pub name: String,
    /// Filled slots: `{"value", "text"}` per slot name.
    pub slots: BTreeMap<String, Value>,
    /// What the bot asked last.
    pub awaiting: Awaiting,
}

/// What the bot is waiting for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "slot")]
pub enum Awaiting {
    /// Nothing yet (the intent was just recognised).
    Nothing,
    /// The value of this slot.
    Slot(String),
    /// A yes or no to the confirmation.
    Confirmation,
}

/// What the caller gives a turn.
pub struct TurnInput<'a> {
    /// The customer's text.
    pub text: &'a str,
    /// The channel it came on (`chat`, `sms`, `voice`, `alexa`, `rest`, ...).
    pub channel: &'a str,
    /// The recognised intent and its confidence, if any.
    pub intent: Option<(&'a str, f32)>,
    /// Slots recognised in the text for that intent: `{"value", "text"}` by name.
    pub slots: &'a BTreeMap<String, Value>,
    /// Fill one slot of one intent from a free answer, as the NLU does for elicited slots.
    pub extract: &'a dyn Fn(&str, &str, &str) -> Option<Value>,
    /// Values the customer's profile already gives, by slot type (`email`, `phone`).
    pub known: &'a BTreeMap<String, Value>,
    /// The message's sentiment score (VADER compound, -1 to 1), when it was measured.
    pub sentiment: Option<f64>,
}

/// What a turn decided.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// The replies, in order.
    pub replies: Vec<String>,
    /// Whether the bot understood the message.
    pub understood: bool,
    /// Set when the conversation goes to agents: the queue.
    pub handoff: Option<String>,
    /// Why it goes to agents: `request` (the customer asked for a person), `sentiment`,
    /// `misunderstood` (`fallback.handoff_after`) or `intent` (an intent's `handoff` fulfilment).
    pub handoff_reason: Option<&'static str>,
    /// Set when an intent was fulfilled by a webhook the caller must call: intent, URL and slots.
    pub webhook: Option<(String, String, BTreeMap<String, Value>)>,
    /// The intent that was fulfilled this turn, with its slots.
    pub fulfilled: Option<(String, BTreeMap<String, Value>)>,
    /// Answers the customer can tap after the last reply (channels without buttons may list them).
    pub quick_replies: Vec<String>,
}

/// What a silence decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceOutcome {
    /// What to say, in order.
    pub replies: Vec<String>,
    /// Answers the customer can give after the last reply (the pending question's).
    pub quick_replies: Vec<String>,
    /// Whether the session ends after the replies (the re-asks are used up).
    pub ends: bool,
    /// Set when the conversation goes to agents: the queue.
    pub handoff: Option<String>,
}

/// A silence: the customer was asked something and said nothing (a spoken prompt timed out).
///
/// `silences_before` is how many silences in a row came before this one; the caller keeps that count
/// (a silence is not a turn, so the state does not change). While it is under the bot's
/// `voice.silence_reprompts`, the pending question is asked again — the slot's prompt, the
/// confirmation, or an open question when nothing is pending; after that the session ends with a
/// goodbye, or with a handoff, as `voice.after_silence` says.
pub fn silence(definition: &BotDefinition, state: &DialogState, silences_before: u32) -> SilenceOutcome {
    if silences_before < definition.voice.silence_reprompts {
        let question = pending_question(definition, state).unwrap_or_else(|| OPEN_QUESTION.to_owned());
        return SilenceOutcome {
            replies: vec![format!("{SILENCE_PREFIX} {question}")],
            quick_replies: quick_replies(definition, state, true),
            ends: false,
            handoff: None,
        };
    }
    match definition.voice.after_silence {
        AfterSilence::Goodbye => SilenceOutcome {
            replies: vec![SILENCE_GOODBYE.into()],
            quick_replies: Vec::new(),
            ends: true,
            handoff: None,
        },
        AfterSilence::Handoff => SilenceOutcome {
            replies: vec![HANDOFF_REPLY.into()],
            quick_replies: Vec::new(),
            ends: true,
            handoff: Some(definition.handoff.queue.clone()),
        },
    }
}

/// The question the bot is waiting on an answer to: the prompt of the slot being asked for, or the
/// confirmation with its slots filled in; None when nothing is pending.
pub fn pending_question(definition: &BotDefinition, state: &DialogState) -> Option<String> {
    let active = state.active.as_ref()?;
    let found = intent(definition, &active.name)?;
    match &active.awaiting {
        Awaiting::Slot(slot) => {
            found.slots.iter().find(|candidate| &candidate.name == slot).and_then(|candidate| candidate.prompt.clone())
        }
        Awaiting::Confirmation => {
            found.confirmation.as_ref().map(|text| render(text, &active.slots, &definition.locale))
        }
        Awaiting::Nothing => None,
    }
}

/// A friendly name for a channel, for the continuity acknowledgement.
pub fn channel_name(channel: &str) -> &str {
    match channel {
        "chat" | "webchat" => "chat",
        "sms" => "our text messages",
        "voice" | "phone" => "our call",
        "alexa" => "Alexa",
        "kiosk" => "the kiosk",
        other => other,
    }
}

/// Yes, no, or neither, in many phrasings.
pub fn yes_or_no(text: &str) -> Option<bool> {
    let lowered: String =
        text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' }).collect();
    let padded = format!(" {} ", lowered.split_whitespace().collect::<Vec<_>>().join(" "));
    const YES: [&str; 24] = [
        "yes",
        "yeah",
        "yep",
        "yup",
        "ya",
        "sure",
        "ok",
        "okay",
        "correct",
        "right",
        "please do",
        "go ahead",
        "absolutely",
        "definitely",
        "sounds good",
        "confirm",
        "y",
        "affirmative",
        "of course",
        "do it",
        "perfect",
        "that works",
        "great",
        "si",
    ];
    const NO: [&str; 16] = [
        "no",
        "nope",
        "nah",
        "don't",
        "dont",
        "do not",
        "cancel",
        "not really",
        "negative",
        "wrong",
        "stop",
        "never mind",
        "nevermind",
        "n",
        "not now",
        "change",
    ];
    let says = |phrases: &[&str]| phrases.iter().any(|phrase| padded.contains(&format!(" {phrase} ")));
    match (says(&YES), says(&NO)) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// Whether a message asks for a person: a short message naming one ("agent", "a real person
/// please", "can I talk to a human?") — the request words are a verb of talking or wanting, or
/// nothing but the person itself.
pub fn asks_for_a_person(text: &str) -> bool {
    const PEOPLE: [&str; 12] = [
        "human",
        "humans",
        "person",
        "people",
        "agent",
        "agents",
        "representative",
        "operator",
        "staff",
        "advisor",
        "adviser",
        "someone",
    ];
    const ASKING: [&str; 11] =
        ["talk", "speak", "chat", "connect", "transfer", "want", "need", "put", "through", "contact", "reach"];
    const FILLER: [&str; 12] = ["a", "an", "the", "real", "live", "please", "pls", "now", "to", "with", "me", "actual"];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).collect();
    if words.is_empty() || words.len() > 14 || !words.iter().any(|word| PEOPLE.contains(word)) {
        return false;
    }
    // "someone" only right after a verb of talking: "speak to someone", "talk with someone".
    let about_someone = words.windows(3).any(|window| {
        matches!(window[0], "talk" | "speak" | "chat") && matches!(window[1], "to" | "with") && window[2] == "someone"
    });
    let person = words.iter().any(|word| PEOPLE.contains(word) && *word != "someone");
    about_someone
        || (person
            && (words.iter().any(|word| ASKING.contains(word))
                || words.iter().all(|word| PEOPLE.contains(word) || FILLER.contains(word))))
}

fn intent<'a>(definition: &'a BotDefinition, name: &str) -> Option<&'a Intent> {
    definition.intents.iter().find(|intent| intent.name == name)
}

/// Run one turn. `state` is updated in place.
pub fn step(definition: &BotDefinition, state: &mut DialogState, input: &TurnInput<'_>) -> TurnOutcome {
    let mut outcome = decide(definition, state, input);
    if outcome.handoff.is_none() && outcome.webhook.is_none() {
        outcome.quick_replies = quick_replies(definition, state, outcome.understood);
    }
    outcome
}

/// What the customer can tap after this turn: yes and no for a confirmation, the values of a small
/// custom slot type being asked for, and the bot's suggestions when it did not understand.
pub fn quick_replies(definition: &BotDefinition, state: &DialogState, understood: bool) -> Vec<String> {
    let Some(active) = &state.active else {
        return if understood { Vec::new() } else { definition.suggestions.clone() };
    };
    match &active.awaiting {
        Awaiting::Confirmation => vec!["Yes".into(), "No".into()],
        Awaiting::Slot(slot) => {
            let slot_type = intent(definition, &active.name)
                .and_then(|found| found.slots.iter().find(|candidate| &candidate.name == slot))
                .map(|slot| slot.slot_type.as_str());
            let values: Vec<String> = definition
                .slot_types
                .iter()
                .find(|custom| slot_type.is_some() && custom.get("name").and_then(Value::as_str) == slot_type)
                .and_then(|custom| custom.get("values").and_then(Value::as_array))
                .into_iter()
                .flatten()
                .filter_map(|value| value.get("value").and_then(Value::as_str).map(str::to_owned))
                .collect();
            if values.len() <= crate::MAX_QUICK_REPLIES { values } else { Vec::new() }
        }
        Awaiting::Nothing => Vec::new(),
    }
}

fn decide(definition: &BotDefinition, state: &mut DialogState, input: &TurnInput<'_>) -> TurnOutcome {
    let mut outcome = TurnOutcome {
        replies: Vec::new(),
        understood: true,
        handoff: None,
        handoff_reason: None,
        webhook: None,
        fulfilled: None,
        quick_replies: Vec::new(),
    };
    // Asking for a person, or a message angrier than the bot's threshold, goes to people at once;
    // the form under way stays as it is, for the agent to see.
    // An intent of the bot's own that hands off (to its queue) takes precedence.
    let intent_hands_off = input
        .intent
        .and_then(|(name, _)| intent(definition, name))
        .is_some_and(|found| matches!(found.fulfillment, Some(Fulfillment::Handoff { .. })));
    let reason = if definition.handoff.on_request && !intent_hands_off && asks_for_a_person(input.text) {
        Some("request")
    } else if definition.handoff.sentiment_below.zip(input.sentiment).is_some_and(|(below, score)| score < below) {
        Some("sentiment")
    } else {
        None
    };
    if let Some(reason) = reason {
        state.last_channel = Some(input.channel.to_owned());
        state.misunderstandings = 0;
        outcome.replies.push(HANDOFF_REPLY.into());
        outcome.handoff = Some(definition.handoff.queue.clone());
        outcome.handoff_reason = Some(reason);
        return outcome;
    }
    let switched_channel = state.last_channel.as_deref().is_some_and(|last| last != input.channel);
    let previous_channel = state.last_channel.replace(input.channel.to_owned());

    // A confirmation pending?
    if let Some(active) = state.active.as_mut()
        && active.awaiting == Awaiting::Confirmation
    {
        match yes_or_no(input.text) {
            Some(true) => {
                let active = state.active.take().expect("checked above");
                state.misunderstandings = 0;
                fulfil(definition, state, active, &mut outcome);
                return outcome;
            }
            Some(false) => {
                state.active = None;
                state.misunderstandings = 0;
                outcome.replies.push("OK, I won't do that. What else can I help with?".into());
                resume(definition, state, &mut outcome);
                return outcome;
            }
            None => {}
        }
    }

    // A slot being asked for?
    let mut filled_by_answer = false;
    if let Some(active) = state.active.as_mut()
        && let Awaiting::Slot(slot) = &active.awaiting
    {
        let slot = slot.clone();
        let interrupting = input
            .intent
            .filter(|(name, confidence)| *name != active.name && *confidence >= SWITCH_CONFIDENCE)
            .is_some();
        // An answer that is mostly the value asked for ("four pm please") is an answer, whatever
        // intent the classifier thinks it sounds like; a value inside a longer request is not.
        if let Some(value) = (input.extract)(&active.name, &slot, input.text)
            && (!interrupting || is_mostly(&value, input.text))
        {
            active.slots.insert(slot, value);
            filled_by_answer = true;
        }
    }

    if !filled_by_answer {
        match input.intent {
            Some((name, _)) if intent(definition, name).is_some() => {
                let same = state.active.as_ref().is_some_and(|active| active.name == name);
                if !same {
                    if let Some(current) = state.active.take() {
                        state.paused.push(current);
                    }
                    state.active = Some(ActiveIntent {
                        name: name.to_owned(),
                        slots: BTreeMap::new(),
                        awaiting: Awaiting::Nothing,
                    });
                }
                let active = state.active.as_mut().expect("just set");
                for (slot, value) in input.slots {
                    active.slots.insert(slot.clone(), value.clone());
                }
            }
            _ => {
                // Back on another channel with a form half filled: say so and ask what is missing.
                if switched_channel && let Some(active) = state.active.take() {
                    let name = previous_channel.as_deref().map(channel_name).unwrap_or("our last conversation");
                    advance(
                        definition,
                        state,
                        active,
                        input,
                        Some(format!("Picking up where we left off in {name}: ")),
                        &mut outcome,
                    );
                    return outcome;
                }
                // Not understood: re-ask what was pending, or fall back.
                state.misunderstandings += 1;
                outcome.understood = false;
                let handoff_after = definition.fallback.handoff_after;
                if handoff_after > 0 && state.misunderstandings >= handoff_after {
                    outcome.replies.push(HANDOFF_REPLY.into());
                    outcome.handoff = Some(definition.handoff.queue.clone());
                    outcome.handoff_reason = Some("misunderstood");
                    state.misunderstandings = 0;
                    return outcome;
                }
                match state.active.as_ref().map(|active| (active, intent(definition, &active.name))) {
                    Some((active, Some(found))) => {
                        let question = match &active.awaiting {
                            Awaiting::Slot(slot) => {
                                found.slots.iter().find(|candidate| &candidate.name == slot).and_then(|candidate| {
                                    candidate.reprompt.clone().or_else(|| candidate.prompt.clone())
                                })
                            }
                            Awaiting::Confirmation => found.confirmation.as_ref().map(|text| {
                                format!("Please answer yes or no: {}", render(text, &active.slots, &definition.locale))
                            }),
                            Awaiting::Nothing => None,
                        };
                        outcome.replies.push(question.unwrap_or_else(|| definition.fallback.response.clone()));
                    }
                    _ => outcome.replies.push(definition.fallback.response.clone()),
                }
                return outcome;
            }
        }
    }
    state.misunderstandings = 0;

    let active = state.active.take().expect("an intent is active here");
    // A customer who carries on a half-filled form on another channel hears that the bot knows.
    let acknowledgement = (switched_channel && (filled_by_answer || !active.slots.is_empty()))
        .then(|| {
            previous_channel
                .as_deref()
                .map(channel_name)
                .map(|name| format!("Picking up where we left off in {name}: "))
        })
        .flatten();
    advance(definition, state, active, input, acknowledgement, &mut outcome);
    outcome
}

/// Whether a slot value's matched text is at least half the words of what the customer said.
fn is_mostly(value: &Value, said: &str) -> bool {
    let matched = value.get("text").and_then(Value::as_str).unwrap_or_default().split_whitespace().count();
    let total = said.split_whitespace().count();
    matched > 0 && matched * 2 >= total
}

/// Ask for the next missing slot, ask for confirmation, or fulfil.
fn advance(
    definition: &BotDefinition,
    state: &mut DialogState,
    mut active: ActiveIntent,
    input: &TurnInput<'_>,
    acknowledgement: Option<String>,
    outcome: &mut TurnOutcome,
) {
    let Some(found) = intent(definition, &active.name) else {
        outcome.replies.push(definition.fallback.response.clone());
        return;
    };
    // Values the profile already knows are not asked for again.
    for slot in &found.slots {
        if !active.slots.contains_key(&slot.name)
            && let Some(value) = input.known.get(&slot.slot_type)
        {
            active.slots.insert(slot.name.clone(), value.clone());
        }
    }
    let prefix = acknowledgement.unwrap_or_default();
    if let Some(missing) = found.slots.iter().find(|slot| slot.required && !active.slots.contains_key(&slot.name)) {
        outcome.replies.push(format!("{prefix}{}", missing.prompt.clone().unwrap_or_default()));
        active.awaiting = Awaiting::Slot(missing.name.clone());
        state.active = Some(active);
        return;
    }
    if let Some(confirmation) = &found.confirmation
        && active.awaiting != Awaiting::Confirmation
    {
        outcome.replies.push(format!("{prefix}{}", render(confirmation, &active.slots, &definition.locale)));
        active.awaiting = Awaiting::Confirmation;
        state.active = Some(active);
        return;
    }
    fulfil(definition, state, active, outcome);
}

fn fulfil(definition: &BotDefinition, state: &mut DialogState, active: ActiveIntent, outcome: &mut TurnOutcome) {
    let Some(found) = intent(definition, &active.name) else { return };
    match &found.fulfillment {
        Some(Fulfillment::Response { response }) => {
            outcome.replies.push(render(response, &active.slots, &definition.locale))
        }
        Some(Fulfillment::Handoff { handoff }) => {
            outcome.replies.push(HANDOFF_REPLY.into());
            outcome.handoff = Some(handoff.queue.clone());
            outcome.handoff_reason = Some("intent");
        }
        Some(Fulfillment::Webhook { webhook }) => {
            outcome.webhook = Some((active.name.clone(), webhook.clone(), active.slots.clone()));
        }
        None => outcome.replies.push(definition.fallback.response.clone()),
    }
    outcome.fulfilled = Some((active.name, active.slots));
    if outcome.handoff.is_none() {
        resume(definition, state, outcome);
    }
}

/// Come back to an interrupted intent.
fn resume(definition: &BotDefinition, state: &mut DialogState, outcome: &mut TurnOutcome) {
    let Some(paused) = state.paused.pop() else { return };
    let question = match (&paused.awaiting, intent(definition, &paused.name)) {
        (Awaiting::Slot(slot), Some(found)) => {
            found.slots.iter().find(|candidate| &candidate.name == slot).and_then(|candidate| candidate.prompt.clone())
        }
        (Awaiting::Confirmation, Some(found)) => {
            found.confirmation.as_ref().map(|text| render(text, &paused.slots, &definition.locale))
        }
        _ => None,
    };
    if let Some(question) = question {
        outcome.replies.push(format!("Now, back to where we were: {question}"));
        state.active = Some(paused);
    }
}

/// Recognised slots in the `{"value", "text"}` form the dialog keeps.
pub fn slot_entry(value: Value, text: &str) -> Value {
    let mut entry = Map::new();
    entry.insert("value".into(), value);
    entry.insert("text".into(), Value::String(text.to_owned()));
    Value::Object(entry)
}

#[cfg(test)]
mod tests;
