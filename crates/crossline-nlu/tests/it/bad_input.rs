//! Hostile and degenerate input: answers, never panics.

use crossline_nlu::{BotDefinition, train};
use serde_json::json;

use crate::context;
use crate::regression::restaurant_bot;

#[test]
fn degenerate_messages_get_sensible_answers() {
    let model = train(&restaurant_bot()).unwrap();
    let context = context();
    let long = "book a table for four ".repeat(500);
    assert!(long.len() > 10_000);
    for text in ["", "   ", "🙂🙂🙂", "???!!!", "\u{0}\u{7}", "預約 table for two 明天", "ﷺ", "a"] {
        let recognition = model.recognize(text, &context);
        assert!(recognition.intent.as_ref().is_none_or(|intent| intent.confidence <= 1.0));
    }
    assert!(model.recognize("", &context).intent.is_none());
    assert!(model.recognize("🙂🙂🙂", &context).intent.is_none());
    assert_eq!(model.recognize("", &context).language.code, "und");
    let recognition = model.recognize(&long, &context);
    assert_eq!(recognition.intent.unwrap().name, "book_table");
}

#[test]
fn one_intent_bot_still_detects_out_of_scope() {
    let definition: BotDefinition = serde_json::from_value(json!({
        "intents": [{"name": "greet", "utterances": ["hello", "hi there", "good morning", "hey"]}]
    }))
    .unwrap();
    let model = train(&definition).unwrap();
    let context = context();
    assert_eq!(model.recognize("hello!", &context).intent.unwrap().name, "greet");
    assert!(model.recognize("what's the weather like tomorrow", &context).intent.is_none());
}

#[test]
fn one_utterance_intents_and_duplicates_train() {
    let definition: BotDefinition = serde_json::from_value(json!({
        "intents": [
            {"name": "a", "utterances": ["check my balance"]},
            {"name": "b", "utterances": ["check my balance", "open an account"]},
            {"name": "c", "utterances": ["reset my password"]}
        ]
    }))
    .unwrap();
    let model = train(&definition).unwrap();
    let context = context();
    let recognition = model.recognize("I forgot my password, reset it", &context);
    assert_eq!(recognition.intent.unwrap().name, "c");
    // The duplicate is split between a and b; whichever wins, confidences stay probabilities.
    let recognition = model.recognize("check my balance", &context);
    let total: f32 = recognition.intent.iter().chain(&recognition.alternatives).map(|intent| intent.confidence).sum();
    assert!(total <= 1.0 + 1e-4);
}
