use super::*;
use serde_json::json;

fn bank() -> BotDefinition {
    crate::parse(&json!({
        "fallback": {"response": "Sorry, I didn't get that.", "handoff_after": 2},
        "suggestions": ["Book an appointment", "Opening hours"],
        "slot_types": [{"name": "account", "values": [{"value": "checking"}, {"value": "savings", "synonyms": ["saver"]}]}],
        "intents": [
            {"name": "transfer", "utterances": ["move money"],
             "slots": [{"name": "from", "type": "account", "prompt": "From which account?"}],
             "fulfillment": {"response": "Done."}},
            {"name": "book_appointment", "utterances": ["book an appointment"],
             "slots": [{"name": "date", "type": "date", "prompt": "What day suits you?"},
                       {"name": "time", "type": "time", "prompt": "What time suits you?", "reprompt": "Which time, for example 3pm?"},
                       {"name": "email", "type": "email", "prompt": "What is your email?"}],
             "confirmation": "Shall I book {date} at {time}?",
             "fulfillment": {"response": "Booked: {date} at {time}. Confirmation goes to {email}."}},
            {"name": "opening_hours", "utterances": ["when are you open"], "fulfillment": {"response": "We are open 9 to 5."}},
            {"name": "card_lost", "utterances": ["I lost my card"], "fulfillment": {"handoff": {"queue": "cards"}}},
            {"name": "balance", "utterances": ["my balance"], "fulfillment": {"webhook": "https://bank.example/balance"}}
        ]
    }))
    .unwrap()
}

/// A stand-in for the NLU's slot filling: dates are "tomorrow", times end in "pm".
fn extract(_intent: &str, slot: &str, text: &str) -> Option<Value> {
    match slot {
        "date" if text.contains("tomorrow") => Some(slot_entry(json!("2026-11-24"), "tomorrow")),
        "time" if text.contains("pm") => Some(slot_entry(json!("15:00"), "3pm")),
        _ => None,
    }
}

struct Say<'a> {
    text: &'a str,
    channel: &'a str,
    intent: Option<(&'a str, f32)>,
    slots: BTreeMap<String, Value>,
}

fn say<'a>(text: &'a str, channel: &'a str, intent: Option<(&'a str, f32)>) -> Say<'a> {
    Say { text, channel, intent, slots: BTreeMap::new() }
}

fn turn(state: &mut DialogState, said: Say<'_>) -> TurnOutcome {
    let known = BTreeMap::from([("email".to_owned(), slot_entry(json!("ada@example.com"), "ada@example.com"))]);
    let input = TurnInput {
        text: said.text,
        channel: said.channel,
        intent: said.intent,
        slots: &said.slots,
        extract: &extract,
        known: &known,
        sentiment: None,
    };
    step(&bank(), state, &input)
}

#[test]
fn a_form_is_filled_confirmed_and_fulfilled_without_asking_what_the_profile_knows() {
    let mut state = DialogState::default();
    let out = turn(&mut state, say("I want to book an appointment", "chat", Some(("book_appointment", 0.95))));
    assert_eq!(out.replies, ["What day suits you?"]);
    let out = turn(&mut state, say("tomorrow please", "chat", None));
    assert_eq!(out.replies, ["What time suits you?"]);
    let out = turn(&mut state, say("3pm", "chat", None));
    assert_eq!(out.replies, ["Shall I book Tuesday, November 24 at 3 pm?"], "the email came from the profile");
    let out = turn(&mut state, say("yes please", "chat", None));
    assert_eq!(out.replies, ["Booked: Tuesday, November 24 at 3 pm. Confirmation goes to ada@example.com."]);
    let (name, slots) = out.fulfilled.unwrap();
    assert_eq!((name.as_str(), slots.len()), ("book_appointment", 3));
    assert!(state.active.is_none());
}

#[test]
fn slots_given_with_the_intent_are_not_asked_again() {
    let mut state = DialogState::default();
    let mut said = say("book me in tomorrow at 3pm", "chat", Some(("book_appointment", 0.9)));
    said.slots.insert("date".into(), slot_entry(json!("2026-11-24"), "tomorrow"));
    said.slots.insert("time".into(), slot_entry(json!("15:00"), "3pm"));
    assert_eq!(turn(&mut state, said).replies, ["Shall I book Tuesday, November 24 at 3 pm?"]);
    let out = turn(&mut state, say("no, cancel that", "chat", None));
    assert_eq!(out.replies, ["OK, I won't do that. What else can I help with?"]);
    assert!(out.fulfilled.is_none() && state.active.is_none());
}

#[test]
fn the_conversation_follows_the_customer_to_another_channel() {
    let mut state = DialogState::default();
    turn(&mut state, say("book an appointment", "chat", Some(("book_appointment", 0.95))));
    turn(&mut state, say("tomorrow", "chat", None));
    // She texts later: something the bot cannot place, so it says where they were.
    let out = turn(&mut state, say("hi it's me again", "sms", None));
    assert_eq!(out.replies, ["Picking up where we left off in chat: What time suits you?"]);
    assert!(out.understood);
    // Then calls and answers the question.
    let out = turn(&mut state, say("3pm works", "voice", None));
    assert_eq!(
        out.replies,
        ["Picking up where we left off in our text messages: Shall I book Tuesday, November 24 at 3 pm?"]
    );
    assert_eq!(turn(&mut state, say("yeah", "voice", None)).fulfilled.unwrap().0, "book_appointment");
}

#[test]
fn another_intent_mid_form_is_answered_and_the_form_resumes() {
    let mut state = DialogState::default();
    turn(&mut state, say("book an appointment", "chat", Some(("book_appointment", 0.95))));
    turn(&mut state, say("tomorrow", "chat", None));
    let out = turn(&mut state, say("wait, when are you open?", "chat", Some(("opening_hours", 0.9))));
    assert_eq!(out.replies, ["We are open 9 to 5.", "Now, back to where we were: What time suits you?"]);
    let out = turn(&mut state, say("3pm", "chat", None));
    assert_eq!(out.replies, ["Shall I book Tuesday, November 24 at 3 pm?"], "the date given before the detour is kept");
}

#[test]
fn misunderstandings_reprompt_then_hand_off() {
    let mut state = DialogState::default();
    turn(&mut state, say("book an appointment", "chat", Some(("book_appointment", 0.95))));
    turn(&mut state, say("tomorrow", "chat", None));
    let out = turn(&mut state, say("purple", "chat", None));
    assert_eq!((out.replies.as_slice(), out.understood), (&["Which time, for example 3pm?".to_owned()][..], false));
    let out = turn(&mut state, say("banana", "chat", None));
    assert_eq!(out.handoff.as_deref(), Some("default"));

    let mut fresh = DialogState::default();
    let out = turn(&mut fresh, say("asdf", "chat", None));
    assert_eq!(out.replies, ["Sorry, I didn't get that."]);
}

#[test]
fn handoff_and_webhook_fulfilments() {
    let mut state = DialogState::default();
    let out = turn(&mut state, say("I lost my card", "chat", Some(("card_lost", 0.99))));
    assert_eq!(out.handoff.as_deref(), Some("cards"));
    let out = turn(&mut DialogState::default(), say("my balance", "chat", Some(("balance", 0.99))));
    let (intent, url, _) = out.webhook.unwrap();
    assert_eq!((intent.as_str(), url.as_str()), ("balance", "https://bank.example/balance"));
    assert!(out.replies.is_empty(), "the caller replies with the webhook's answer");
}

#[test]
fn yes_and_no_in_many_phrasings() {
    for text in
        ["yes", "Yeah!", "yep, go ahead", "sure", "OK", "that's right", "Sounds good.", "absolutely", "y", "please do"]
    {
        assert_eq!(yes_or_no(text), Some(true), "{text}");
    }
    for text in ["no", "Nope.", "nah", "don't", "cancel it", "not really", "never mind", "N"] {
        assert_eq!(yes_or_no(text), Some(false), "{text}");
    }
    for text in ["maybe", "what?", "yes no", "tomorrow at 3"] {
        assert_eq!(yes_or_no(text), None, "{text}");
    }
}

#[test]
fn templates_render_values() {
    let slots = BTreeMap::from([
        ("amount".to_owned(), slot_entry(json!({"amount": 20.5, "currency": "USD"}), "$20.50")),
        ("count".to_owned(), slot_entry(json!(4), "four")),
    ]);
    assert_eq!(
        render("Send {amount} to {count} people, {missing}", &slots, "en"),
        "Send $20.50 to 4 people, {missing}"
    );
}

#[test]
fn state_round_trips_through_json() {
    let mut state = DialogState::default();
    turn(&mut state, say("book an appointment", "chat", Some(("book_appointment", 0.95))));
    let stored = serde_json::to_value(&state).unwrap();
    assert_eq!(serde_json::from_value::<DialogState>(stored).unwrap(), state);
}

#[test]
fn quick_replies_offer_yes_no_the_values_asked_for_and_suggestions_after_a_miss() {
    let mut state = DialogState::default();
    let out = turn(&mut state, say("move money", "chat", Some(("transfer", 0.9))));
    assert_eq!(
        (out.replies.as_slice(), out.quick_replies.as_slice()),
        (&["From which account?".to_owned()][..], &["checking".to_owned(), "savings".to_owned()][..])
    );
    let mut state = DialogState::default();
    let mut said = say("book me in tomorrow at 3pm", "chat", Some(("book_appointment", 0.9)));
    said.slots.insert("date".into(), slot_entry(json!("2026-11-24"), "tomorrow"));
    said.slots.insert("time".into(), slot_entry(json!("15:00"), "3pm"));
    assert_eq!(turn(&mut state, said).quick_replies, ["Yes", "No"]);
    let out = turn(&mut state, say("yes", "chat", None));
    assert!(out.quick_replies.is_empty(), "nothing to tap after the booking: {:?}", out.quick_replies);
    let out = turn(&mut DialogState::default(), say("purple elephants", "chat", None));
    assert_eq!(out.quick_replies, ["Book an appointment", "Opening hours"]);
    let out = turn(&mut DialogState::default(), say("date", "chat", Some(("book_appointment", 0.9))));
    assert!(out.quick_replies.is_empty(), "a built-in slot type offers no buttons");
}

#[test]
fn an_answer_that_is_mostly_the_value_is_not_taken_for_another_intent() {
    let mut state = DialogState::default();
    turn(&mut state, say("I want to book an appointment", "chat", Some(("book_appointment", 0.95))));
    // The classifier hears "card_lost" in "tomorrow please", but the answer is the date asked for.
    let out = turn(&mut state, say("tomorrow please", "chat", Some(("card_lost", 0.7))));
    assert_eq!(out.replies, ["What time suits you?"]);
    // A value inside a longer request for something else is the other request.
    let out = turn(&mut state, say("at 3pm but first I lost my card and need help", "chat", Some(("card_lost", 0.9))));
    assert!(out.handoff.is_some(), "{out:?}");
}

#[test]
fn silence_asks_the_pending_question_again_then_says_goodbye_and_changes_nothing() {
    let mut state = DialogState::default();
    turn(&mut state, say("book an appointment", "voice", Some(("book_appointment", 0.95))));
    let before = state.clone();
    for silences_before in 0..2 {
        let out = silence(&bank(), &state, silences_before);
        assert_eq!(out.replies, ["Sorry, I didn't hear anything. What day suits you?"]);
        assert!(!out.ends && out.handoff.is_none());
    }
    let out = silence(&bank(), &state, 2);
    assert_eq!((out.replies.as_slice(), out.ends, out.handoff), (&[SILENCE_GOODBYE.to_owned()][..], true, None));
    assert_eq!(state, before, "a silence is not a turn");

    // At a confirmation it is the confirmation, with its yes/no; with nothing pending, an open question.
    turn(&mut state, say("tomorrow", "voice", None));
    turn(&mut state, say("3pm", "voice", None));
    let out = silence(&bank(), &state, 0);
    assert_eq!(
        (out.replies.as_slice(), out.quick_replies.as_slice()),
        (
            &["Sorry, I didn't hear anything. Shall I book Tuesday, November 24 at 3 pm?".to_owned()][..],
            &["Yes".to_owned(), "No".to_owned()][..]
        )
    );
    let out = silence(&bank(), &DialogState::default(), 0);
    assert_eq!(out.replies, ["Sorry, I didn't hear anything. How can I help?"]);
    // A small custom slot type's values are offered again.
    let mut transfer = DialogState::default();
    turn(&mut transfer, say("move money", "voice", Some(("transfer", 0.9))));
    assert_eq!(silence(&bank(), &transfer, 0).quick_replies, ["checking", "savings"]);
}

#[test]
fn silence_hands_off_when_the_bot_says_so() {
    let mut definition = bank();
    definition.voice = crate::VoiceSettings { silence_reprompts: 0, after_silence: crate::AfterSilence::Handoff };
    let out = silence(&definition, &DialogState::default(), 0);
    assert_eq!(
        (out.replies.as_slice(), out.ends, out.handoff.as_deref()),
        (&[HANDOFF_REPLY.to_owned()][..], true, Some(DEFAULT_QUEUE))
    );
}

#[test]
fn asking_for_a_person_is_told_from_other_talk() {
    for asked in [
        "agent",
        "Human please!",
        "can I talk to a real person?",
        "I want to speak to someone",
        "connect me with an agent",
        "Let me speak with a representative now",
        "operator",
    ] {
        assert!(asks_for_a_person(asked), "{asked}");
    }
    for other in [
        "I want to book an appointment",
        "the person at the desk was rude and I want my money back from this shop today thanks",
        "people say you are open on sundays",
        "can someone help me get my card back",
        "someone took my wallet",
        "",
        "speak",
    ] {
        assert!(!asks_for_a_person(other), "{other}");
    }
}

#[test]
fn a_request_for_a_person_or_an_angry_message_hands_off_keeping_the_form() {
    let mut state = DialogState::default();
    turn(&mut state, say("I want to book an appointment", "chat", Some(("book_appointment", 0.95))));
    let out = turn(&mut state, say("can I talk to a human?", "chat", None));
    assert_eq!((out.handoff.as_deref(), out.handoff_reason), (Some(DEFAULT_QUEUE), Some("request")));
    assert_eq!(out.replies, [HANDOFF_REPLY]);
    assert_eq!(state.active.as_ref().map(|active| active.name.as_str()), Some("book_appointment"), "the form stays");

    let mut definition = bank();
    definition.handoff.sentiment_below = Some(-0.5);
    definition.handoff.queue = "care".into();
    definition.handoff.on_request = false;
    let known = BTreeMap::new();
    let slots = BTreeMap::new();
    let angry = |score: f64, text: &'static str| TurnInput {
        text,
        channel: "sms",
        intent: None,
        slots: &slots,
        extract: &extract,
        known: &known,
        sentiment: Some(score),
    };
    let mut state = DialogState::default();
    let out = step(&definition, &mut state, &angry(-0.8, "this is useless, I am furious"));
    assert_eq!((out.handoff.as_deref(), out.handoff_reason), (Some("care"), Some("sentiment")));
    let out = step(&definition, &mut DialogState::default(), &angry(-0.2, "agent"));
    assert_eq!(out.handoff, None, "on_request off, sentiment above the threshold");
}
