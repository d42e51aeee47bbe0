//! Replies rendered for a channel's capabilities. This is the one place that decides how a bot's
//! replies look on each channel: buttons where they can be shown, a list of options in plain text
//! where they cannot, short speech and a re-prompt for voice, and SSML where the channel speaks it.

use crate::{Capabilities, escape_xml};

/// A bot reply as the conversation engine produces it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// The text.
    pub text: String,
    /// Answers the customer can give with a tap.
    pub quick_replies: Vec<String>,
}

impl Reply {
    /// A reply without quick replies.
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: text.into(), quick_replies: Vec::new() }
    }
}

/// Replies ready for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// The messages to show, send or say, in order, fitted to the channel.
    pub messages: Vec<String>,
    /// Buttons after the last message (only on channels with rich content).
    pub buttons: Vec<String>,
    /// For channels that speak SSML: the whole answer as one `<speak>` document.
    pub ssml: Option<String>,
    /// For voice channels: what to say when the customer stays silent.
    pub reprompt: Option<String>,
}

/// Said when a voice customer stays silent and the bot asked nothing in particular.
pub const GENERIC_REPROMPT: &str = "Is there anything else I can help with?";

/// Render replies for a channel.
pub fn render(replies: &[Reply], capabilities: &Capabilities) -> Rendered {
    let options = replies.last().map(|reply| reply.quick_replies.as_slice()).unwrap_or_default();
    let mut rendered = Rendered::default();
    if capabilities.voice {
        rendered.messages = replies.iter().map(|reply| speech(&reply.text, capabilities.max_reply_chars)).collect();
        if !options.is_empty()
            && let Some(last) = rendered.messages.last_mut()
        {
            last.push_str(&format!(" You can say {}.", spoken_list(options)));
        }
        rendered.messages.retain(|message| !message.is_empty());
        let question = rendered.messages.last().filter(|message| message.contains('?')).cloned();
        rendered.reprompt = Some(question.unwrap_or_else(|| GENERIC_REPROMPT.to_owned()));
        if capabilities.ssml {
            rendered.ssml = Some(ssml(&rendered.messages));
        }
    } else if capabilities.rich_content {
        rendered.messages = replies.iter().map(|reply| fit(&reply.text, capabilities.max_reply_chars)).collect();
        rendered.buttons = options.to_vec();
    } else {
        // Plain text in one message (an SMS): the options are listed under the text.
        let mut text = replies.iter().map(|reply| reply.text.trim()).collect::<Vec<_>>().join("\n");
        if !options.is_empty() {
            text.push_str(&format!("\nReply {}", options.join(" / ")));
        }
        if !text.trim().is_empty() {
            rendered.messages.push(fit(&text, capabilities.max_reply_chars));
        }
    }
    rendered
}

/// `text` cut to `max` characters, ending in `…` when cut.
pub fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Text fit for speech: markup and links dropped, cut at a sentence end within `max` characters.
pub fn speech(text: &str, max: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().filter(|word| !word.contains("://")).collect();
    let cleaned: String =
        words.join(" ").chars().filter(|c| !matches!(c, '*' | '_' | '#' | '`' | '<' | '>' | '[' | ']')).collect();
    if cleaned.chars().count() <= max {
        return cleaned;
    }
    let cut: String = cleaned.chars().take(max).collect();
    match cut.rfind(['.', '?', '!']) {
        Some(end) if end > max / 2 => cut[..=end].to_owned(),
        _ => cut,
    }
}

/// "yes or no", "checking, savings or credit".
fn spoken_list(options: &[String]) -> String {
    let options: Vec<String> = options.iter().map(|option| option.to_lowercase()).collect();
    match options.as_slice() {
        [] => String::new(),
        [only] => only.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// One SSML document: each message a paragraph, a short pause between them.
pub fn ssml(messages: &[String]) -> String {
    let body = messages.iter().map(|message| escape_xml(message)).collect::<Vec<_>>().join("<break time=\"300ms\"/>");
    format!("<speak>{body}</speak>")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: Capabilities = Capabilities { max_reply_chars: 4000, rich_content: true, voice: false, ssml: false };
    const SMS: Capabilities = Capabilities { max_reply_chars: 1530, rich_content: false, voice: false, ssml: false };
    const SPEAKER: Capabilities = Capabilities { max_reply_chars: 600, rich_content: false, voice: true, ssml: true };

    fn confirm() -> Vec<Reply> {
        vec![
            Reply::text("Picking up where we left off in chat:"),
            Reply { text: "Shall I book Tuesday at 3 PM?".into(), quick_replies: vec!["Yes".into(), "No".into()] },
        ]
    }

    #[test]
    fn chat_gets_buttons() {
        let rendered = render(&confirm(), &CHAT);
        assert_eq!(rendered.messages.len(), 2);
        assert_eq!(rendered.buttons, ["Yes", "No"]);
        assert_eq!((rendered.ssml, rendered.reprompt), (None, None));
    }

    #[test]
    fn sms_gets_one_message_listing_the_options() {
        let rendered = render(&confirm(), &SMS);
        assert_eq!(
            rendered.messages,
            ["Picking up where we left off in chat:\nShall I book Tuesday at 3 PM?\nReply Yes / No"]
        );
        assert!(rendered.buttons.is_empty());
        let long = render(&[Reply::text("x".repeat(5000))], &SMS);
        assert_eq!(long.messages[0].chars().count(), 1530);
        assert!(long.messages[0].ends_with('…'));
        assert!(render(&[], &SMS).messages.is_empty(), "no reply, no SMS");
    }

    #[test]
    fn voice_gets_speech_options_ssml_and_a_reprompt() {
        let rendered = render(&confirm(), &SPEAKER);
        assert_eq!(rendered.messages[1], "Shall I book Tuesday at 3 PM? You can say yes or no.");
        assert_eq!(rendered.reprompt.as_deref(), Some("Shall I book Tuesday at 3 PM? You can say yes or no."));
        assert_eq!(
            rendered.ssml.as_deref(),
            Some(
                "<speak>Picking up where we left off in chat:<break time=\"300ms\"/>Shall I book Tuesday at 3 PM? You can say yes or no.</speak>"
            )
        );
        let done = render(&[Reply::text("Booked. See **you** at <b>3</b> & https://bank.example/x bye.")], &SPEAKER);
        assert_eq!(done.messages, ["Booked. See you at b3/b & bye."]);
        assert_eq!(done.ssml.as_deref(), Some("<speak>Booked. See you at b3/b &amp; bye.</speak>"));
        assert_eq!(done.reprompt.as_deref(), Some(GENERIC_REPROMPT));
        let options = [Reply {
            text: "Which account?".into(),
            quick_replies: vec!["Checking".into(), "Savings".into(), "Credit".into()],
        }];
        assert_eq!(render(&options, &SPEAKER).messages, ["Which account? You can say checking, savings or credit."]);
    }

    #[test]
    fn long_speech_is_cut_at_a_sentence() {
        let text = format!("{}. And then some more words that run on", "word ".repeat(115).trim());
        let spoken = speech(&text, 600);
        assert!(spoken.ends_with("word."), "{spoken}");
        assert_eq!(speech(&"a".repeat(700), 600).len(), 600);
    }
}
