//! Language understanding for Crossline: intents, out-of-scope detection, slots, sentiment, language.
//!
//! Invariant: this crate does no IO of any kind — no files, no network, no clock. "Now" and the time
//! zone come in through [`RecognizeContext`]. Training is CPU work: call [`train`] from a blocking
//! thread pool, never from an async task.
//!
//! ```
//! use crossline_nlu::{BotDefinition, RecognizeContext, train};
//! let definition: BotDefinition = serde_json::from_str(r#"{
//!   "intents": [
//!     {"name": "book_table", "utterances": ["book a table for {party_size}", "table for {party_size} please",
//!       "I want to reserve a table", "can I book a table for {party_size} people"],
//!      "slots": [{"name": "party_size", "type": "number"}]},
//!     {"name": "opening_hours", "utterances": ["when are you open", "what are your opening hours",
//!       "are you open on sunday"]}]}"#).unwrap();
//! let model = train(&definition).unwrap();
//! let context = RecognizeContext {
//!     now: chrono::Utc::now(),
//!     time_zone: chrono_tz::Europe::Paris,
//!     default_region: "FR".into(),
//! };
//! let recognition = model.recognize("book a table for four", &context);
//! assert_eq!(recognition.intent.unwrap().name, "book_table");
//! assert_eq!(recognition.slots["party_size"].value, serde_json::json!(4));
//! ```

pub mod classifier;
pub mod entities;
pub mod features;
pub mod intent;
pub mod mlp;
pub mod model;
pub mod numbers;
pub mod signals;
pub mod tagger;
pub mod temporal;
pub mod text;

pub use entities::{
    BuiltinType, ListType, ListValue, RecognizeContext, SlotType, SlotValue, extract_all, extract_slot,
};
pub use intent::{DEFAULT_OUT_OF_SCOPE_THRESHOLD, OUT_OF_SCOPE_LABEL, ScoredIntent};
pub use model::{
    BotDefinition, DefinitionError, IntentDefinition, Recognition, Recognizer, SlotDefinition, SlotTypeDefinition,
    train,
};
pub use signals::{Language, Sentiment, SentimentLabel};
