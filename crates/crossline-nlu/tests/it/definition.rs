//! Definition errors name the field at fault.

use crossline_nlu::{BotDefinition, train};
use serde_json::json;

fn error_of(definition: serde_json::Value) -> String {
    let definition: BotDefinition = serde_json::from_value(definition).unwrap();
    train(&definition).unwrap_err().to_string()
}

#[test]
fn unknown_slot_type_is_named() {
    let message = error_of(json!({
        "intents": [
            {"name": "a", "utterances": ["hi"]},
            {"name": "b", "utterances": ["hello"]},
            {"name": "c", "utterances": ["from {account}"], "slots": [{"name": "account", "type": "acount"}]}
        ],
        "slot_types": [{"name": "account", "values": [{"value": "checking"}]}]
    }));
    assert_eq!(message, "intents[2].slots[0].type: unknown slot type \"acount\"");
}

#[test]
fn other_errors_are_named() {
    assert_eq!(error_of(json!({"intents": []})), "intents: a bot needs at least one intent");
    assert_eq!(
        error_of(json!({"intents": [{"name": "a", "utterances": ["for {size}"]}]})),
        "intents[0].utterances[0]: slot {size} is not declared in intents[0].slots"
    );
    assert_eq!(
        error_of(json!({"intents": [{"name": "a", "utterances": ["for {size"]}]})),
        "intents[0].utterances[0]: has a \"{\" without a matching \"}\""
    );
    assert_eq!(
        error_of(json!({"intents": [{"name": "a", "utterances": []}]})),
        "intents[0].utterances: an intent needs at least one non-empty utterance"
    );
    assert_eq!(
        error_of(json!({"intents": [{"name": "a", "utterances": ["x"]}, {"name": "a", "utterances": ["y"]}]})),
        "intents[1].name: duplicate intent name \"a\""
    );
    assert_eq!(
        error_of(json!({"intents": [{"name": "a", "utterances": ["x"]}],
                        "slot_types": [{"name": "date", "values": [{"value": "x"}]}]})),
        "slot_types[0].name: \"date\" is a built-in type; choose another name"
    );
    assert_eq!(
        error_of(json!({"intents": [{"name": "a", "utterances": ["x"]}],
                        "slot_types": [{"name": "colour", "values": []}]})),
        "slot_types[0].values: a list type needs at least one value"
    );
    assert_eq!(
        error_of(json!({"intents": [{"name": "a", "utterances": ["x"]}], "out_of_scope_threshold": 2.0})),
        "out_of_scope_threshold: must be between 0 and 1"
    );
}

#[test]
fn contract_bot_definition_parses_and_trains() {
    // The example from CONTRACT.md, with its extra fields.
    let definition: BotDefinition = serde_json::from_value(json!({
        "locale": "en",
        "greeting": "Hi! How can I help?",
        "fallback": {"response": "Sorry, I didn't get that.", "handoff_after": 2},
        "intents": [
            {"name": "book_appointment",
             "utterances": ["I want to book an appointment", "book a visit for {date}"],
             "slots": [{"name": "date", "type": "date", "prompt": "What day suits you?"},
                       {"name": "time", "type": "time", "prompt": "What time?"}],
             "confirmation": "Shall I book {date} at {time}?",
             "fulfillment": {"response": "Booked: {date} at {time}."}}],
        "slot_types": [{"name": "account", "values": [{"value": "checking", "synonyms": ["current"]}]}]
    }))
    .unwrap();
    let model = train(&definition).unwrap();
    let recognition = model.recognize("book a visit for tomorrow at 3pm", &crate::context());
    assert_eq!(recognition.intent.unwrap().name, "book_appointment");
    assert_eq!(recognition.slots["date"].value, json!("2026-11-24"));
    assert_eq!(recognition.slots["time"].value, json!("15:00"));
}
