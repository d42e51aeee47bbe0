//! Bot definitions, training, and recognition: the API the bot engine uses.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use crate::entities::{BuiltinType, ListType, ListValue, RecognizeContext, SlotType, SlotValue, extract_all};
use crate::intent::{
    DEFAULT_OUT_OF_SCOPE_THRESHOLD, IntentClassifier, IntentSettings, OUT_OF_SCOPE_LABEL, ScoredIntent,
};
use crate::signals::{Language, Sentiment, detect_language, sentiment};
use crate::tagger::{AnnotatedText, SlotTagger};
use crate::text::bounded;

/// A slot of an intent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotDefinition {
    /// Slot name, referenced as `{name}` in utterances.
    pub name: String,
    /// A built-in type name or a custom slot type's name.
    #[serde(rename = "type")]
    pub slot_type: String,
}

/// An intent with its sample utterances.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntentDefinition {
    /// Intent name.
    pub name: String,
    /// Sample utterances; `{slot}` marks where a slot value goes.
    pub utterances: Vec<String>,
    /// The intent's slots.
    #[serde(default)]
    pub slots: Vec<SlotDefinition>,
}

/// A custom list type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotTypeDefinition {
    /// Type name.
    pub name: String,
    /// Values with synonyms.
    pub values: Vec<ListValue>,
}

/// What the language model needs from a bot definition. Other fields of the bot definition are ignored
/// when deserialising, so the bot engine can parse the same JSON.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct BotDefinition {
    /// The intents.
    pub intents: Vec<IntentDefinition>,
    /// Custom slot types.
    #[serde(default)]
    pub slot_types: Vec<SlotTypeDefinition>,
    /// Confidence below which a message is out of scope (default [`DEFAULT_OUT_OF_SCOPE_THRESHOLD`]).
    #[serde(default)]
    pub out_of_scope_threshold: Option<f32>,
    /// Examples of messages the bot should not handle; they train an explicit out-of-scope class.
    #[serde(default)]
    pub out_of_scope_examples: Vec<String>,
}

/// A definition error, naming the field at fault, e.g.
/// `intents[2].slots[0].type: unknown slot type "acount"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    /// Path of the faulty field.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError { field: field.into(), message: message.into() }
}

/// A piece of a sample utterance: literal text or a slot reference.
enum Piece<'a> {
    Text(&'a str),
    Slot(&'a str),
}

/// Splits "book a table for {party_size}" into pieces; unbalanced braces are an error.
fn parse_utterance(utterance: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = utterance;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("has a \"}\" without a matching \"{\"".into());
        }
        let Some(close) = rest[open..].find('}') else {
            return Err("has a \"{\" without a matching \"}\"".into());
        };
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let name = rest[open + 1..open + close].trim();
        if name.is_empty() || name.contains('{') {
            return Err("has an empty or nested slot reference".into());
        }
        pieces.push(Piece::Slot(name));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Sample values used to fill `{slot}` markers when training the tagger, per built-in type. They are
/// varied in form (digits and words, relative and absolute) so the tagger learns the context, not the
/// value.
fn builtin_samples(builtin: BuiltinType) -> &'static [&'static str] {
    match builtin {
        BuiltinType::Number => &["4", "two", "12", "one hundred", "3", "six", "25", "eight"],
        BuiltinType::Money => &["$20", "50 dollars", "€15", "twenty bucks", "$1,200", "100 euros"],
        BuiltinType::Date => {
            &["tomorrow", "next tuesday", "march 3rd", "the 5th", "today", "friday", "12/24", "in 2 days"]
        }
        BuiltinType::Time => &["3pm", "noon", "9:30", "7 in the evening", "10 am", "half past 4"],
        BuiltinType::Datetime => {
            &["tomorrow at 3pm", "next friday at noon", "in 2 hours", "monday morning", "march 3rd at 9:30", "tonight"]
        }
        BuiltinType::Duration => &["2 hours", "30 minutes", "a week", "three days", "an hour and a half"],
        BuiltinType::Email => &["jane.doe@example.com", "bob@mail.org", "sales@acme.io"],
        BuiltinType::Phone => &["(415) 555-2671", "+44 20 7946 0958", "555 867 5309"],
        BuiltinType::Text => &["the blue one", "john smith", "something else", "my order", "pizza", "the usual"],
    }
}

/// Generic messages that belong to no customer-service bot. When a definition brings no out-of-scope
/// examples these train the out-of-scope class, so that even a one-intent bot can answer "no intent".
const BACKGROUND_EXAMPLES: &[&str] = &[
    "what's the weather like",
    "tell me a joke",
    "who won the game last night",
    "what is the meaning of life",
    "sing me a song",
    "how tall is mount everest",
    "what's your favorite color",
    "do you like pizza",
    "how old is the universe",
    "translate hello into french",
    "what is two plus two",
    "who is the president",
    "recommend a good movie",
    "asdfgh",
    "lol",
    "blah blah blah",
    "how do i bake bread",
    "what time is it in tokyo",
    "are you a robot",
    "flip a coin",
];

/// A trained bot model.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Recognizer {
    classifier: IntentClassifier,
    threshold: f32,
    /// Per intent: slot name → type, and the tagger learned from the annotated utterances.
    intents: HashMap<String, IntentSlots>,
    slot_types: HashMap<String, SlotType>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct IntentSlots {
    slots: Vec<(String, String)>,
    tagger: Option<SlotTagger>,
}

/// The answer for one message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recognition {
    /// The intent, or `None` when the message is out of scope.
    pub intent: Option<ScoredIntent>,
    /// The next most likely intents (up to three), most likely first.
    pub alternatives: Vec<ScoredIntent>,
    /// Filled slots of the recognised intent, by slot name.
    pub slots: BTreeMap<String, SlotValue>,
    /// Sentiment of the message.
    pub sentiment: Sentiment,
    /// Detected language.
    pub language: Language,
}

/// Number of alternatives reported.
const ALTERNATIVES: usize = 3;

/// Validates a definition and trains a model. Errors name the field at fault.
pub fn train(definition: &BotDefinition) -> Result<Recognizer, DefinitionError> {
    Recognizer::train(definition, &IntentSettings::default())
}

impl Recognizer {
    /// Validates `definition` and trains with explicit settings.
    pub fn train(definition: &BotDefinition, settings: &IntentSettings) -> Result<Recognizer, DefinitionError> {
        let slot_types = compile_slot_types(definition)?;
        if definition.intents.is_empty() {
            return Err(error("intents", "a bot needs at least one intent"));
        }
        if let Some(threshold) = definition.out_of_scope_threshold
            && !(0.0..=1.0).contains(&threshold)
        {
            return Err(error("out_of_scope_threshold", "must be between 0 and 1"));
        }
        let mut examples: Vec<(String, String)> = Vec::new();
        let mut intents = HashMap::new();
        for (intent_index, intent) in definition.intents.iter().enumerate() {
            let field = format!("intents[{intent_index}]");
            let name = intent.name.trim();
            if name.is_empty() {
                return Err(error(format!("{field}.name"), "must not be empty"));
            }
            if name == OUT_OF_SCOPE_LABEL {
                return Err(error(
                    format!("{field}.name"),
                    "\"oos\" is reserved; put out-of-scope examples in out_of_scope_examples",
                ));
            }
            if intents.contains_key(name) {
                return Err(error(format!("{field}.name"), format!("duplicate intent name \"{name}\"")));
            }
            let mut slots: Vec<(String, String)> = Vec::new();
            for (slot_index, slot) in intent.slots.iter().enumerate() {
                let slot_field = format!("{field}.slots[{slot_index}]");
                if slot.name.trim().is_empty() {
                    return Err(error(format!("{slot_field}.name"), "must not be empty"));
                }
                if slots.iter().any(|(existing, _)| *existing == slot.name) {
                    return Err(error(format!("{slot_field}.name"), format!("duplicate slot name \"{}\"", slot.name)));
                }
                if !slot_types.contains_key(&slot.slot_type) {
                    return Err(error(
                        format!("{slot_field}.type"),
                        format!("unknown slot type \"{}\"", slot.slot_type),
                    ));
                }
                slots.push((slot.name.clone(), slot.slot_type.clone()));
            }
            if intent.utterances.iter().all(|utterance| utterance.trim().is_empty()) {
                return Err(error(format!("{field}.utterances"), "an intent needs at least one non-empty utterance"));
            }
            let mut annotated = Vec::new();
            for (utterance_index, utterance) in intent.utterances.iter().enumerate() {
                let utterance_field = format!("{field}.utterances[{utterance_index}]");
                let pieces = parse_utterance(utterance).map_err(|message| error(&utterance_field, message))?;
                for piece in &pieces {
                    if let Piece::Slot(slot) = piece
                        && !slots.iter().any(|(name, _)| name == slot)
                    {
                        return Err(error(
                            &utterance_field,
                            format!("slot {{{slot}}} is not declared in {field}.slots"),
                        ));
                    }
                }
                let variants = expand_utterance(&pieces, &slots, &slot_types);
                for variant in &variants {
                    if !variant.text.trim().is_empty() {
                        examples.push((variant.text.clone(), name.to_string()));
                    }
                }
                annotated.extend(variants);
            }
            let tagger =
                annotated.iter().any(|example| !example.slots.is_empty()).then(|| SlotTagger::train(&annotated, 10));
            intents.insert(name.to_string(), IntentSlots { slots, tagger });
        }
        if definition.out_of_scope_examples.is_empty() {
            for example in BACKGROUND_EXAMPLES {
                examples.push((example.to_string(), OUT_OF_SCOPE_LABEL.to_string()));
            }
        } else {
            for example in &definition.out_of_scope_examples {
                examples.push((example.clone(), OUT_OF_SCOPE_LABEL.to_string()));
            }
        }
        let classifier =
            IntentClassifier::train(examples.iter().map(|(text, intent)| (text.as_str(), intent.as_str())), settings);
        Ok(Recognizer {
            classifier,
            threshold: definition.out_of_scope_threshold.unwrap_or(DEFAULT_OUT_OF_SCOPE_THRESHOLD),
            intents,
            slot_types,
        })
    }

    /// Trains from annotated utterances, as in data sets: intents from the labels (`oos` marks
    /// out-of-scope rows), slots typed as `text` and learned from their spans.
    pub fn train_annotated(
        examples: &[(AnnotatedText, String)],
        settings: &IntentSettings,
        threshold: f32,
    ) -> Recognizer {
        let classifier = IntentClassifier::train(
            examples.iter().map(|(example, intent)| (example.text.as_str(), intent.as_str())),
            settings,
        );
        let mut by_intent: BTreeMap<&str, Vec<AnnotatedText>> = BTreeMap::new();
        for (example, intent) in examples {
            by_intent.entry(intent).or_default().push(example.clone());
        }
        let mut intents = HashMap::new();
        for (intent, annotated) in by_intent {
            let mut slots: Vec<(String, String)> = annotated
                .iter()
                .flat_map(|example| example.slots.iter().map(|(_, name)| name.clone()))
                .map(|name| (name, "text".to_string()))
                .collect();
            slots.sort();
            slots.dedup();
            let tagger = (!slots.is_empty()).then(|| SlotTagger::train(&annotated, 10));
            intents.insert(intent.to_string(), IntentSlots { slots, tagger });
        }
        Recognizer { classifier, threshold, intents, slot_types: builtin_types() }
    }

    /// The intent classifier (for evaluation and calibration).
    pub fn classifier(&self) -> &IntentClassifier {
        &self.classifier
    }

    /// The intent classifier, mutably (to fit temperatures on held-out data).
    pub fn classifier_mut(&mut self) -> &mut IntentClassifier {
        &mut self.classifier
    }

    /// The out-of-scope threshold in force.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Sets the out-of-scope threshold.
    pub fn set_threshold(&mut self, threshold: f32) {
        if threshold.is_finite() {
            self.threshold = threshold.clamp(0.0, 1.0);
        }
    }

    /// Recognises one message: intent (or none), alternatives, slots, sentiment and language. Never
    /// panics; empty or symbol-only text is out of scope.
    pub fn recognize(&self, text: &str, context: &RecognizeContext) -> Recognition {
        let text = bounded(text);
        let scores = self.classifier.score(text);
        let intent = scores.decide(self.threshold).cloned();
        let alternatives = scores
            .ranked
            .iter()
            .filter(|candidate| Some(&candidate.name) != intent.as_ref().map(|intent| &intent.name))
            .take(ALTERNATIVES)
            .cloned()
            .collect();
        let slots = match &intent {
            Some(intent) => self.fill_slots(&intent.name, text, context),
            None => BTreeMap::new(),
        };
        Recognition { intent, alternatives, slots, sentiment: sentiment(text), language: detect_language(text) }
    }

    /// Slot spans found by an intent's tagger, before typing (for evaluation).
    pub fn tag_slots(&self, intent: &str, text: &str) -> Vec<(Range<usize>, String)> {
        self.intents
            .get(intent)
            .and_then(|slots| slots.tagger.as_ref())
            .map(|tagger| tagger.tag(bounded(text)))
            .unwrap_or_default()
    }

    /// Fills the slots of `intent` from `text`: spans the tagger found, typed by the slot's type; then
    /// any slot still empty whose type occurs once in the intent takes the first value of that type in
    /// the message that no other slot used.
    pub fn fill_slots(&self, intent: &str, text: &str, context: &RecognizeContext) -> BTreeMap<String, SlotValue> {
        let mut filled = BTreeMap::new();
        let Some(definition) = self.intents.get(intent) else {
            return filled;
        };
        let mut used: Vec<Range<usize>> = Vec::new();
        if let Some(tagger) = &definition.tagger {
            for (range, slot) in tagger.tag(text) {
                if filled.contains_key(&slot) {
                    continue;
                }
                let Some((_, type_name)) = definition.slots.iter().find(|(name, _)| *name == slot) else {
                    continue;
                };
                let Some(slot_type) = self.slot_types.get(type_name) else {
                    continue;
                };
                // A typed value found in the whole message that overlaps the tagger's span wins over one
                // read inside the span: the tagger may stop short ("friday" of "next friday"), and the
                // words around a value can change it.
                let whole_message = match slot_type {
                    SlotType::Builtin(BuiltinType::Text) => None,
                    _ => extract_all(slot_type, text, context)
                        .into_iter()
                        .find(|value| value.span.start < range.end && range.start < value.span.end),
                };
                let value = whole_message.or_else(|| {
                    extract_all(slot_type, &text[range.clone()], context).into_iter().next().map(|mut value| {
                        value.span = range.start + value.span.start..range.start + value.span.end;
                        value
                    })
                });
                if let Some(value) = value {
                    if used.iter().any(|other| value.span.start < other.end && other.start < value.span.end) {
                        continue;
                    }
                    used.push(value.span.clone());
                    filled.insert(slot, value);
                }
            }
        }
        for (slot, type_name) in &definition.slots {
            if filled.contains_key(slot) || type_name == "text" {
                continue;
            }
            let same_type = definition.slots.iter().filter(|(_, other)| other == type_name).count();
            if same_type != 1 {
                continue;
            }
            let Some(slot_type) = self.slot_types.get(type_name) else {
                continue;
            };
            if let Some(value) = extract_all(slot_type, text, context)
                .into_iter()
                .find(|value| !used.iter().any(|range| value.span.start < range.end && range.start < value.span.end))
            {
                used.push(value.span.clone());
                filled.insert(slot.clone(), value);
            }
        }
        filled
    }

    /// Fills one slot from a free answer to its prompt ("What day suits you?" → "next tuesday"), by the
    /// slot's type. `None` when the slot is unknown or the answer holds no value of its type.
    pub fn extract_slot(&self, intent: &str, slot: &str, text: &str, context: &RecognizeContext) -> Option<SlotValue> {
        let definition = self.intents.get(intent)?;
        let (_, type_name) = definition.slots.iter().find(|(name, _)| name == slot)?;
        let slot_type = self.slot_types.get(type_name)?;
        extract_all(slot_type, bounded(text), context).into_iter().next()
    }

    /// The compiled slot type with this name (built-in or custom).
    pub fn slot_type(&self, name: &str) -> Option<&SlotType> {
        self.slot_types.get(name)
    }
}

fn builtin_types() -> HashMap<String, SlotType> {
    [
        BuiltinType::Number,
        BuiltinType::Money,
        BuiltinType::Date,
        BuiltinType::Time,
        BuiltinType::Datetime,
        BuiltinType::Duration,
        BuiltinType::Email,
        BuiltinType::Phone,
        BuiltinType::Text,
    ]
    .into_iter()
    .map(|builtin| (builtin.name().to_string(), SlotType::Builtin(builtin)))
    .collect()
}

fn compile_slot_types(definition: &BotDefinition) -> Result<HashMap<String, SlotType>, DefinitionError> {
    let mut types = builtin_types();
    for (index, slot_type) in definition.slot_types.iter().enumerate() {
        let field = format!("slot_types[{index}]");
        let name = slot_type.name.trim();
        if name.is_empty() {
            return Err(error(format!("{field}.name"), "must not be empty"));
        }
        if BuiltinType::from_name(name).is_some() {
            return Err(error(format!("{field}.name"), format!("\"{name}\" is a built-in type; choose another name")));
        }
        if types.contains_key(name) {
            return Err(error(format!("{field}.name"), format!("duplicate slot type \"{name}\"")));
        }
        if slot_type.values.is_empty() {
            return Err(error(format!("{field}.values"), "a list type needs at least one value"));
        }
        for (value_index, value) in slot_type.values.iter().enumerate() {
            if value.value.trim().is_empty() {
                return Err(error(format!("{field}.values[{value_index}].value"), "must not be empty"));
            }
        }
        types.insert(name.to_string(), SlotType::List(ListType::new(name, slot_type.values.clone())));
    }
    Ok(types)
}

/// Expands an utterance into annotated training texts by filling each `{slot}` with sample values of its
/// type: one text per sample (cycling through the samples of every slot in step), at most eight.
fn expand_utterance(
    pieces: &[Piece<'_>],
    slots: &[(String, String)],
    slot_types: &HashMap<String, SlotType>,
) -> Vec<AnnotatedText> {
    let samples_of = |slot: &str| -> Vec<String> {
        let type_name = slots.iter().find(|(name, _)| name == slot).map_or("text", |(_, type_name)| type_name.as_str());
        match slot_types.get(type_name) {
            Some(SlotType::List(list)) => list
                .values
                .iter()
                .flat_map(|value| std::iter::once(&value.value).chain(&value.synonyms))
                .cloned()
                .collect(),
            Some(SlotType::Builtin(builtin)) => {
                builtin_samples(*builtin).iter().map(|sample| sample.to_string()).collect()
            }
            None => vec!["something".to_string()],
        }
    };
    let slot_pieces: Vec<Vec<String>> = pieces
        .iter()
        .map(|piece| match piece {
            Piece::Slot(slot) => samples_of(slot),
            Piece::Text(_) => Vec::new(),
        })
        .collect();
    let has_slots = pieces.iter().any(|piece| matches!(piece, Piece::Slot(_)));
    let variants = if has_slots { slot_pieces.iter().map(Vec::len).max().unwrap_or(1).clamp(1, 8) } else { 1 };
    let mut output = Vec::with_capacity(variants);
    for variant in 0..variants {
        let mut text = String::new();
        let mut annotations = Vec::new();
        for (piece, samples) in pieces.iter().zip(&slot_pieces) {
            match piece {
                Piece::Text(literal) => text.push_str(literal),
                Piece::Slot(slot) => {
                    let sample = samples.get(variant % samples.len().max(1)).map_or("something", String::as_str);
                    let start = text.len();
                    text.push_str(sample);
                    annotations.push((start..text.len(), slot.to_string()));
                }
            }
        }
        output.push(AnnotatedText { text, slots: annotations });
    }
    output
}
