//! Channels (`/channels`): how messages leave the workspace — the SMTP server for email, the Twilio
//! account for SMS — and the send policy of marketing messages (quiet hours, a frequency cap), which
//! were set only with the REST API before.
//!
//! The forms save through the REST API's own code ([`api::save_channel`],
//! [`crossline_engage::Engage::put_settings`]), so the checks and their messages are the API's. A
//! secret (the SMTP password, the Twilio auth token) is never written into a page, not even as a
//! field's value: its field is empty, and left empty it keeps the stored secret. Every form is a
//! POST, which the [`Session`] extractor accepts only from the console's own pages.

use super::error::ConsoleError;
use super::layout::{self, Section, base_url, channel_badge, page_head, value_text};
use super::session::Session;
use super::url;
use crate::api::channels as api;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use crossline_channels::ChannelKind;
use crossline_engage::policy::MessagingSettings;
use crossline_store::Workspace;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::str::FromStr;

/// What a secret's field says while a secret is stored.
pub const KEEP_SECRET_HINT: &str = "set — leave empty to keep";
/// The SMTP encryption modes, as `tls` takes them, with their labels.
const TLS_MODES: [(&str, &str); 3] = [
    ("starttls", "STARTTLS (submission, port 587)"),
    ("tls", "TLS from the first byte (port 465)"),
    ("none", "None: a relay on a trusted network only (port 25)"),
];

/// One of the page's forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelsForm {
    /// Email over SMTP.
    Smtp,
    /// SMS over Twilio.
    Twilio,
    /// Quiet hours and the frequency cap.
    Messaging,
}

impl ChannelsForm {
    /// Every form.
    pub const ALL: [ChannelsForm; 3] = [ChannelsForm::Smtp, ChannelsForm::Twilio, ChannelsForm::Messaging];

    /// The name in `?saved=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelsForm::Smtp => "smtp",
            ChannelsForm::Twilio => "twilio",
            ChannelsForm::Messaging => "messaging",
        }
    }

    /// The form a name stands for; None for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        ChannelsForm::ALL.into_iter().find(|form| form.as_str() == name)
    }

    /// What the page says after this form was saved.
    fn saved_text(self) -> &'static str {
        match self {
            ChannelsForm::Smtp => "Saved the email (SMTP) settings. The next email sent goes through this server.",
            ChannelsForm::Twilio => "Saved the SMS (Twilio) settings. The next SMS sent goes through this account.",
            ChannelsForm::Messaging => "Saved the messaging settings. They hold for marketing sends from now on.",
        }
    }
}

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct ChannelsParams {
    /// The form just saved (`smtp`, `twilio`, `messaging`).
    pub saved: Option<String>,
}

/// What the page says above its forms.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelsNotice {
    /// Nothing.
    None,
    /// A form was saved.
    Saved(ChannelsForm),
    /// A form was not saved, and why (shown in that form).
    Failed(ChannelsForm, String),
}

impl ChannelsNotice {
    /// Why `form` was not saved, if it was the one refused.
    fn fault(&self, form: ChannelsForm) -> Option<&str> {
        match self {
            ChannelsNotice::Failed(failed, fault) if *failed == form => Some(fault.as_str()),
            _ => None,
        }
    }
}

/// The email form's fields, as typed (every one may be empty).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SmtpForm {
    /// The SMTP server's host name or address.
    pub host: String,
    /// Its port; empty for the TLS mode's usual one.
    pub port: String,
    /// `starttls`, `tls` or `none`.
    pub tls: String,
    /// The SMTP login.
    pub username: String,
    /// A new password; empty keeps the stored one. Never rendered.
    pub password: String,
    /// The `From` mailbox.
    pub from: String,
    /// The `Reply-To` mailbox.
    pub reply_to: String,
    /// The bounce address.
    pub envelope_from: String,
    /// The address of the `mailto:` unsubscribe.
    pub unsubscribe_mailto: String,
    /// Most connections kept open.
    pub pool_size: String,
    /// Seconds to wait for the server at each step.
    pub timeout_seconds: String,
}

impl SmtpForm {
    /// The form filled from a stored configuration as a GET shows it (so without its password).
    pub fn from_view(view: &Value) -> Self {
        SmtpForm {
            host: view_text(view, "host"),
            port: view_text(view, "port"),
            tls: view_text(view, "tls"),
            username: view_text(view, "username"),
            password: String::new(),
            from: view_text(view, "from"),
            reply_to: view_text(view, "reply_to"),
            envelope_from: view_text(view, "envelope_from"),
            unsubscribe_mailto: view_text(view, "unsubscribe_mailto"),
            pool_size: view_text(view, "pool_size"),
            timeout_seconds: view_text(view, "timeout_seconds"),
        }
    }

    /// The configuration as `PUT /api/v1/channels/smtp` takes it: empty optional fields left out,
    /// numbers as numbers, and an empty password replaced by `stored_password` while a username is
    /// given (without a username the login is being removed, password and all).
    pub fn body(&self, stored_password: Option<String>) -> Result<Value, String> {
        let mut body = Map::new();
        body.insert("host".into(), json!(self.host.trim()));
        body.insert("from".into(), json!(self.from.trim()));
        let optional = [
            ("tls", &self.tls),
            ("username", &self.username),
            ("reply_to", &self.reply_to),
            ("envelope_from", &self.envelope_from),
            ("unsubscribe_mailto", &self.unsubscribe_mailto),
        ];
        for (field, text) in optional {
            if !text.trim().is_empty() {
                body.insert(field.into(), json!(text.trim()));
            }
        }
        let password = if self.password.is_empty() {
            stored_password.filter(|_| !self.username.trim().is_empty())
        } else {
            Some(self.password.clone())
        };
        if let Some(password) = password {
            body.insert("password".into(), Value::String(password));
        }
        let numbers = [
            ("port", whole_number::<u16>("port", &self.port, " from 1 to 65535")?),
            ("pool_size", whole_number::<u32>("pool_size", &self.pool_size, "")?),
            ("timeout_seconds", whole_number::<u64>("timeout_seconds", &self.timeout_seconds, "")?),
        ];
        for (field, number) in numbers {
            if let Some(number) = number {
                body.insert(field.into(), number);
            }
        }
        Ok(Value::Object(body))
    }
}

/// The SMS form's fields, as typed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TwilioForm {
    /// The account SID (`AC…`).
    pub account_sid: String,
    /// A new auth token; empty keeps the stored one. Never rendered.
    pub auth_token: String,
    /// The Twilio number customers text and call.
    pub phone_number: String,
    /// The bot that answers.
    pub bot: String,
    /// Twilio's REST API base; empty for Twilio's own.
    pub api_base_url: String,
}

impl TwilioForm {
    /// The form filled from a stored configuration as a GET shows it (so without its auth token).
    pub fn from_view(view: &Value) -> Self {
        TwilioForm {
            account_sid: view_text(view, "account_sid"),
            auth_token: String::new(),
            phone_number: view_text(view, "phone_number"),
            bot: view_text(view, "bot"),
            api_base_url: view_text(view, "api_base_url"),
        }
    }

    /// The configuration as `PUT /api/v1/channels/twilio` takes it, an empty auth token replaced by
    /// `stored_token`.
    pub fn body(&self, stored_token: Option<String>) -> Value {
        let typed = self.auth_token.trim();
        let auth_token = if typed.is_empty() { stored_token.unwrap_or_default() } else { typed.to_owned() };
        let mut body = json!({
            "account_sid": self.account_sid.trim(),
            "auth_token": auth_token,
            "phone_number": self.phone_number.trim(),
            "bot": self.bot.trim(),
        });
        let base = self.api_base_url.trim();
        if !base.is_empty() {
            body["api_base_url"] = json!(base);
        }
        body
    }
}

/// The messaging settings' fields, as typed: both times empty for no quiet hours, both numbers
/// empty for no cap.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MessagingForm {
    /// When quiet hours start, `HH:MM`.
    pub quiet_start: String,
    /// When they end, `HH:MM`.
    pub quiet_end: String,
    /// Most marketing messages per customer ...
    pub cap_max: String,
    /// ... in this many days.
    pub cap_days: String,
}

impl MessagingForm {
    /// The form filled from the stored settings.
    pub fn from_settings(settings: &MessagingSettings) -> Self {
        let time = |time: chrono::NaiveTime| time.format("%H:%M").to_string();
        MessagingForm {
            quiet_start: settings.quiet_hours.map(|quiet| time(quiet.start)).unwrap_or_default(),
            quiet_end: settings.quiet_hours.map(|quiet| time(quiet.end)).unwrap_or_default(),
            cap_max: settings.frequency_cap.map(|cap| cap.max.to_string()).unwrap_or_default(),
            cap_days: settings.frequency_cap.map(|cap| cap.days.to_string()).unwrap_or_default(),
        }
    }

    /// The settings as `PUT /api/v1/settings/messaging` takes them; half a pair is a fault.
    pub fn body(&self) -> Result<Value, String> {
        let (start, end) = (self.quiet_start.trim(), self.quiet_end.trim());
        let quiet_hours = match (start.is_empty(), end.is_empty()) {
            (true, true) => Value::Null,
            (false, false) => json!({"start": start, "end": end}),
            _ => return Err("quiet_hours: give both start and end as HH:MM, or neither for no quiet hours".into()),
        };
        let (max, days) = (self.cap_max.trim(), self.cap_days.trim());
        let frequency_cap = match (max.is_empty(), days.is_empty()) {
            (true, true) => Value::Null,
            (false, false) => {
                let max = whole_number::<u32>("frequency_cap.max", max, "")?;
                let days = whole_number::<u32>("frequency_cap.days", days, "")?;
                json!({"max": max, "days": days})
            }
            _ => return Err("frequency_cap: give both the most messages and the days, or neither for no cap".into()),
        };
        Ok(json!({"quiet_hours": quiet_hours, "frequency_cap": frequency_cap}))
    }
}

/// A field of a configuration's public view as form text (numbers written out, null empty).
fn view_text(view: &Value, field: &str) -> String {
    match &view[field] {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => String::new(),
    }
}

/// A form's number: None when empty, else the number as JSON, or a fault naming the field.
fn whole_number<T: FromStr + Into<Value>>(field: &str, text: &str, range: &str) -> Result<Option<Value>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<T>().map(|number| Some(number.into())).map_err(|_| format!("{field}: must be a whole number{range}"))
}

/// Everything the page shows but the notice.
#[derive(Debug, Clone, Default)]
pub struct ChannelsPage {
    /// The email form.
    pub smtp: SmtpForm,
    /// Whether an SMTP password is stored.
    pub smtp_password_set: bool,
    /// The SMS form.
    pub twilio: TwilioForm,
    /// Whether a Twilio auth token is stored.
    pub twilio_token_set: bool,
    /// The messaging settings form.
    pub messaging: MessagingForm,
    /// The other configured channels (web chat, Alexa) as a GET shows them.
    pub others: Vec<(&'static str, Value)>,
    /// The workspace's bots, to choose the one answering SMS.
    pub bots: Vec<String>,
    /// Where this workspace's provider webhooks are: `{base}/hooks/{workspace_id}`.
    pub hooks_url: String,
    /// The workspace's VAPID public key, which browsers subscribe to Web Push with.
    pub vapid_public_key: String,
}

/// The page as stored now.
async fn load(state: &AppState, workspace: &Workspace, headers: &HeaderMap) -> Result<ChannelsPage, ConsoleError> {
    let smtp = api::channel_view(state, &workspace.id, ChannelKind::Email).await?;
    let twilio = api::channel_view(state, &workspace.id, ChannelKind::Twilio).await?;
    let settings = state.engage.settings(&workspace.id).await.map_err(ApiError::from)?;
    let mut others = Vec::new();
    for kind in [ChannelKind::WebChat, ChannelKind::Alexa, ChannelKind::Fcm, ChannelKind::Apns] {
        if let Some(view) = api::channel_view(state, &workspace.id, kind).await? {
            others.push((kind.as_str(), view));
        }
    }
    let bots = state.store.bots(&workspace.id).await?.into_iter().map(|bot| bot.name).collect();
    let is_set =
        |view: &Option<Value>, flag: &str| view.as_ref().is_some_and(|view| view[flag].as_bool() == Some(true));
    Ok(ChannelsPage {
        smtp_password_set: is_set(&smtp, "password_set"),
        smtp: smtp.as_ref().map(SmtpForm::from_view).unwrap_or_default(),
        twilio_token_set: is_set(&twilio, "auth_token_set"),
        twilio: twilio.as_ref().map(TwilioForm::from_view).unwrap_or_default(),
        messaging: MessagingForm::from_settings(&settings),
        others,
        bots,
        hooks_url: format!("{}/hooks/{}", base_url(state, headers), url::encode(&workspace.id)),
        vapid_public_key: state.engage.vapid_key(&workspace.id).await.map_err(ApiError::from)?.public_key(),
    })
}

/// A stored secret of a channel (`password`, `auth_token`), to keep when its field was left empty.
/// The stored secret (`field`) a form left empty may keep — only while the fields in `bound` (where
/// the secret is sent: host, port, login, API base) are as stored, so nobody who cannot read the
/// secret can have it sent to a server of their choosing. `Err(())` when one changed.
async fn stored_secret(
    state: &AppState,
    workspace_id: &str,
    kind: ChannelKind,
    field: &str,
    bound: &[(&str, &str)],
) -> Result<Result<Option<String>, ()>, ConsoleError> {
    let stored = state.store.channel(workspace_id, kind.as_str()).await?;
    let Some(stored) = stored else { return Ok(Ok(None)) };
    let Some(secret) = stored.get(field).and_then(Value::as_str).filter(|secret| !secret.is_empty()) else {
        return Ok(Ok(None));
    };
    let as_stored = |name: &str| match stored.get(name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.trim().to_owned(),
        Some(other) => other.to_string(),
    };
    if bound.iter().any(|(name, typed)| as_stored(name) != typed.trim()) {
        return Ok(Err(()));
    }
    Ok(Ok(Some(secret.to_owned())))
}

/// What a save came to: None when it was stored, else the status and the message to show. A
/// server fault is the page's own error.
fn outcome<T>(result: Result<T, ApiError>) -> Result<Option<(StatusCode, String)>, ConsoleError> {
    match result {
        Ok(_) => Ok(None),
        Err(err) if err.status.is_server_error() => Err(err.into()),
        Err(err) => Ok(Some((err.status, err.message))),
    }
}

fn saved_url(form: ChannelsForm) -> String {
    format!("/channels?saved={}", form.as_str())
}

/// The page again after `form` was refused, with the fault in that form.
fn refused(session: &Session, page: &ChannelsPage, form: ChannelsForm, status: StatusCode, fault: String) -> Response {
    let content = channels_content(page, &ChannelsNotice::Failed(form, fault));
    session.respond((status, layout::shell(session, Section::Channels, "Channels", content)))
}

/// `GET /channels?saved=`: the email, SMS and messaging settings as stored, in their forms.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Query(params): Query<ChannelsParams>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let page = load(&state, workspace, &headers).await?;
    let notice = match params.saved.as_deref().and_then(ChannelsForm::parse) {
        Some(form) => ChannelsNotice::Saved(form),
        None => ChannelsNotice::None,
    };
    let content = channels_content(&page, &notice);
    Ok(session.respond(layout::shell(&session, Section::Channels, "Channels", content)))
}

/// `POST /channels/smtp`: store the email settings as `PUT /api/v1/channels/smtp` does, then back to
/// the page; a fault shows the page again with what was typed (but the password).
pub async fn save_smtp(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<SmtpForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let bound = [("host", form.host.as_str()), ("username", form.username.as_str())];
    let stored = stored_secret(&state, &workspace.id, ChannelKind::Email, "password", &bound).await?;
    let refusal = match stored {
        Err(()) if form.password.is_empty() && !form.username.trim().is_empty() => Some((
            StatusCode::BAD_REQUEST,
            "password: type it again — the host or username changed, and the stored password is only sent \
             where it was given for"
                .to_owned(),
        )),
        stored => match form.body(stored.unwrap_or_default()) {
            Ok(body) => outcome(api::save_channel(&state, workspace, ChannelKind::Email.as_str(), body).await)?,
            Err(fault) => Some((StatusCode::BAD_REQUEST, fault)),
        },
    };
    let Some((status, fault)) = refusal else {
        return Ok(Redirect::to(&saved_url(ChannelsForm::Smtp)).into_response());
    };
    let mut page = load(&state, workspace, &headers).await?;
    page.smtp = SmtpForm { password: String::new(), ..form };
    Ok(refused(&session, &page, ChannelsForm::Smtp, status, fault))
}

/// `POST /channels/twilio`: store the SMS settings as `PUT /api/v1/channels/twilio` does, then back
/// to the page; a fault shows the page again with what was typed (but the auth token).
pub async fn save_twilio(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<TwilioForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    // An empty API base is Twilio's own, as the API stores it.
    let base = match form.api_base_url.trim() {
        "" => "https://api.twilio.com",
        typed => typed,
    };
    let bound = [("account_sid", form.account_sid.as_str()), ("api_base_url", base)];
    let stored = stored_secret(&state, &workspace.id, ChannelKind::Twilio, "auth_token", &bound).await?;
    let refusal = match stored {
        Err(()) if form.auth_token.trim().is_empty() => Some((
            StatusCode::BAD_REQUEST,
            "auth_token: type it again — the account SID or API base changed, and the stored token is only sent \
             where it was given for"
                .to_owned(),
        )),
        stored => {
            let body = form.body(stored.unwrap_or_default());
            outcome(api::save_channel(&state, workspace, ChannelKind::Twilio.as_str(), body).await)?
        }
    };
    let Some((status, fault)) = refusal else {
        return Ok(Redirect::to(&saved_url(ChannelsForm::Twilio)).into_response());
    };
    let mut page = load(&state, workspace, &headers).await?;
    page.twilio = TwilioForm { auth_token: String::new(), ..form };
    Ok(refused(&session, &page, ChannelsForm::Twilio, status, fault))
}

/// `POST /settings/messaging`: store quiet hours and the frequency cap as
/// `PUT /api/v1/settings/messaging` does, then back to the page; a fault shows the page again with
/// what was typed.
pub async fn save_messaging(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<MessagingForm>,
) -> Result<Response, ConsoleError> {
    let Some(workspace) = &session.workspace else {
        return Ok(Redirect::to("/").into_response());
    };
    let refusal = match form.body() {
        Ok(body) => outcome(state.engage.put_settings(&workspace.id, &body).await.map_err(ApiError::from))?,
        Err(fault) => Some((StatusCode::BAD_REQUEST, fault)),
    };
    let Some((status, fault)) = refusal else {
        return Ok(Redirect::to(&saved_url(ChannelsForm::Messaging)).into_response());
    };
    let mut page = load(&state, workspace, &headers).await?;
    page.messaging = form;
    Ok(refused(&session, &page, ChannelsForm::Messaging, status, fault))
}

/// The page: a saved note, the email, SMS and messaging forms (a fault inside the form refused), and
/// the other channels read-only.
pub fn channels_content(page: &ChannelsPage, notice: &ChannelsNotice) -> Markup {
    html! {
        (page_head("Channels", Some(html! {
            "How messages leave this workspace — email through your SMTP server, SMS through your Twilio account — and when marketing messages may be sent."
        })))
        @if let ChannelsNotice::Saved(form) = notice {
            div.alert.info role="status" data-testid="channels-saved" data-form=(form.as_str()) { (form.saved_text()) }
        }
        div.grid.channels {
            (smtp_card(page, notice.fault(ChannelsForm::Smtp)))
            (twilio_card(page, notice.fault(ChannelsForm::Twilio)))
            (messaging_card(page, notice.fault(ChannelsForm::Messaging)))
            (push_card(page))
            @if !page.others.is_empty() { (others_card(&page.others)) }
        }
    }
}

/// The error inside a form, naming the field at fault.
fn fault_alert(fault: Option<&str>) -> Markup {
    html! {
        @if let Some(fault) = fault {
            div.alert.error role="alert" data-testid="channels-error" { (fault) }
        }
    }
}

/// A secret's hint: stored (and kept when left empty), or not set yet.
fn secret_hint(set: bool, what: &str) -> Markup {
    html! {
        div.field-hint {
            @if set { "A " (what) " is stored; leave this empty to keep it." } @else { "No " (what) " is stored yet." }
            " It is never shown."
        }
    }
}

fn smtp_card(page: &ChannelsPage, fault: Option<&str>) -> Markup {
    let form = &page.smtp;
    html! {
        section.card #smtp {
            div.card-head { h2 { "Email (SMTP)" } span.hint { "campaigns and test sends go out through this server" } }
            div.card-body {
                form.stacked method="post" action="/channels/smtp" autocomplete="off" data-testid="channels-smtp-form" {
                    (fault_alert(fault))
                    label for="smtp-host" { "Host" }
                    input #smtp-host type="text" name="host" value=(form.host) required maxlength="253"
                        placeholder="smtp.example.com" data-testid="channels-smtp-host";
                    label for="smtp-port" { "Port" }
                    input #smtp-port type="text" name="port" value=(form.port) inputmode="numeric" maxlength="5"
                        placeholder="587";
                    div.field-hint { "Empty: 587 with STARTTLS, 465 with TLS, 25 without." }
                    label for="smtp-tls" { "Encryption" }
                    select #smtp-tls name="tls" {
                        @for (value, label) in TLS_MODES {
                            option value=(value) selected[form.tls == value] { (label) }
                        }
                    }
                    label for="smtp-username" { "Username" }
                    input #smtp-username type="text" name="username" value=(form.username) maxlength="320"
                        autocomplete="off";
                    label for="smtp-password" { "Password" }
                    input #smtp-password type="password" name="password" autocomplete="new-password"
                        placeholder=(if page.smtp_password_set { KEEP_SECRET_HINT } else { "" });
                    (secret_hint(page.smtp_password_set, "password"))
                    label for="smtp-from" { "From" }
                    input #smtp-from type="text" name="from" value=(form.from) required maxlength="320"
                        placeholder="Acme <news@acme.example>";
                    label for="smtp-reply-to" { "Reply-To" }
                    input #smtp-reply-to type="text" name="reply_to" value=(form.reply_to) maxlength="320"
                        placeholder="Acme Support <help@acme.example>";
                    label for="smtp-envelope-from" { "Envelope from (bounces)" }
                    input #smtp-envelope-from type="text" name="envelope_from" value=(form.envelope_from)
                        maxlength="320" placeholder="bounces@acme.example";
                    div.field-hint { "Empty: the From address." }
                    label for="smtp-unsubscribe" { "Unsubscribe mailto" }
                    input #smtp-unsubscribe type="text" name="unsubscribe_mailto" value=(form.unsubscribe_mailto)
                        maxlength="320" placeholder="unsubscribe@acme.example";
                    label for="smtp-pool" { "Connections" }
                    input #smtp-pool type="text" name="pool_size" value=(form.pool_size) inputmode="numeric"
                        maxlength="3" placeholder="16";
                    label for="smtp-timeout" { "Timeout (seconds)" }
                    input #smtp-timeout type="text" name="timeout_seconds" value=(form.timeout_seconds)
                        inputmode="numeric" maxlength="3" placeholder="30";
                    div.form-actions {
                        button.button type="submit" data-testid="channels-smtp-save" { "Save email settings" }
                        span.field-hint { "The host must be reachable from this server." }
                    }
                }
            }
        }
    }
}

fn twilio_card(page: &ChannelsPage, fault: Option<&str>) -> Markup {
    let form = &page.twilio;
    html! {
        section.card #twilio {
            div.card-head { h2 { "SMS (Twilio)" } span.hint { "texts sent and answered through your Twilio number" } }
            div.card-body {
                form.stacked method="post" action="/channels/twilio" autocomplete="off" data-testid="channels-twilio-form" {
                    (fault_alert(fault))
                    label for="twilio-sid" { "Account SID" }
                    input #twilio-sid type="text" name="account_sid" value=(form.account_sid) required maxlength="34"
                        placeholder="AC…" spellcheck="false";
                    label for="twilio-token" { "Auth token" }
                    input #twilio-token type="password" name="auth_token" autocomplete="new-password"
                        placeholder=(if page.twilio_token_set { KEEP_SECRET_HINT } else { "" });
                    (secret_hint(page.twilio_token_set, "auth token"))
                    label for="twilio-number" { "Phone number" }
                    input #twilio-number type="text" name="phone_number" value=(form.phone_number) required
                        maxlength="32" placeholder="+15551234567";
                    label for="twilio-bot" { "Bot answering replies" }
                    input #twilio-bot type="text" name="bot" value=(form.bot) required maxlength="64"
                        list="twilio-bots";
                    datalist #twilio-bots {
                        @for bot in &page.bots { option value=(bot) {} }
                    }
                    @if page.bots.is_empty() {
                        div.field-hint { "This workspace has no bot yet: create one with " code { "PUT /api/v1/bots/{name}" } "." }
                    }
                    label for="twilio-api" { "API base URL" }
                    input #twilio-api type="text" name="api_base_url" value=(form.api_base_url) maxlength="2048"
                        placeholder="https://api.twilio.com";
                    div.field-hint {
                        "Point the number's messaging webhook at " code { (page.hooks_url) "/twilio/sms" }
                        " and its voice webhook at " code { (page.hooks_url) "/twilio/voice" } "."
                    }
                    div.form-actions {
                        button.button type="submit" data-testid="channels-twilio-save" { "Save SMS settings" }
                    }
                }
            }
        }
    }
}

fn messaging_card(page: &ChannelsPage, fault: Option<&str>) -> Markup {
    let form = &page.messaging;
    html! {
        section.card #messaging {
            div.card-head { h2 { "Messaging settings" } span.hint { "for marketing sends; transactional ones skip them" } }
            div.card-body {
                form.stacked method="post" action="/settings/messaging" data-testid="channels-messaging-form" {
                    (fault_alert(fault))
                    label for="quiet-start" { "Quiet hours start" }
                    input #quiet-start type="text" name="quiet_start" value=(form.quiet_start) maxlength="5"
                        placeholder="21:00" data-testid="channels-quiet-start";
                    label for="quiet-end" { "Quiet hours end" }
                    input #quiet-end type="text" name="quiet_end" value=(form.quiet_end) maxlength="5"
                        placeholder="08:00" data-testid="channels-quiet-end";
                    div.field-hint {
                        "HH:MM in each customer's time zone; a start after the end spans midnight. Sends inside them wait for the end. Both empty: no quiet hours."
                    }
                    label for="cap-max" { "At most this many messages per customer" }
                    input #cap-max type="text" name="cap_max" value=(form.cap_max) inputmode="numeric" maxlength="4"
                        placeholder="3" data-testid="channels-cap-max";
                    label for="cap-days" { "In this many days" }
                    input #cap-days type="text" name="cap_days" value=(form.cap_days) inputmode="numeric"
                        maxlength="3" placeholder="7" data-testid="channels-cap-days";
                    div.field-hint { "Across every campaign; sends over the cap are suppressed. Both empty: no cap." }
                    div.form-actions {
                        button.button type="submit" data-testid="channels-messaging-save" { "Save messaging settings" }
                    }
                }
            }
        }
    }
}

/// Push: the VAPID key browsers subscribe with, and where app push is set up.
fn push_card(page: &ChannelsPage) -> Markup {
    html! {
        section.card #push data-testid="channels-push" {
            div.card-head {
                h2 { "Push" }
                span.hint { "browsers, Android and iOS apps" }
            }
            div.card-body {
                p {
                    "Web Push needs no account: browsers subscribe with this workspace's VAPID public key — "
                    code { "Crossline.subscribePush()" } " in the chat widget does it for your visitors."
                }
                dl.facts {
                    dt { "VAPID public key" }
                    dd { code.wrap data-testid="vapid-public-key" { (page.vapid_public_key) } }
                }
                p.hint {
                    "App push: give Crossline your Firebase service account (" code { "PUT /api/v1/channels/fcm" }
                    ") or your APNs key (" code { "PUT /api/v1/channels/apns" } "); they show under Other channels once set. "
                    "Register subscriptions and device tokens with " code { "POST /api/v1/profiles/{id}/push-subscriptions" } "."
                }
            }
        }
    }
}

/// The other configured channels, read-only, as a GET shows them.
fn others_card(others: &[(&'static str, Value)]) -> Markup {
    html! {
        section.card #other-channels {
            div.card-head {
                h2 { "Other channels" }
                span.hint { "set with " code { "PUT /api/v1/channels/{kind}" } }
            }
            div.card-body {
                @for (kind, view) in others {
                    div.other-channel data-channel=(kind) {
                        (channel_badge(kind))
                        dl.facts {
                            @if let Some(fields) = view.as_object() {
                                @for (field, value) in fields {
                                    dt { (field) }
                                    dd { (value_text(value, 80)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_form_becomes_the_api_body() {
        let form = SmtpForm {
            host: " smtp.example.com ".into(),
            port: "2525".into(),
            tls: "starttls".into(),
            username: "news".into(),
            from: "News <news@example.com>".into(),
            pool_size: " ".into(),
            ..SmtpForm::default()
        };
        let body = form.body(Some("stored-secret".into())).unwrap();
        assert_eq!(body["host"], "smtp.example.com");
        assert_eq!(body["port"], 2525, "a number, not text: {body}");
        assert_eq!(body["password"], "stored-secret", "an empty field keeps the stored password");
        assert!(body.get("pool_size").is_none() && body.get("reply_to").is_none(), "empty is not set: {body}");
        let typed = SmtpForm { password: "new-secret".into(), ..form.clone() };
        assert_eq!(typed.body(Some("stored-secret".into())).unwrap()["password"], "new-secret");
        let no_login = SmtpForm { username: String::new(), ..form.clone() };
        assert!(no_login.body(Some("stored-secret".into())).unwrap().get("password").is_none());
        let port = SmtpForm { port: "70000".into(), ..form.clone() };
        assert_eq!(port.body(None).unwrap_err(), "port: must be a whole number from 1 to 65535");
        let timeout = SmtpForm { timeout_seconds: "soon".into(), ..form };
        assert!(timeout.body(None).unwrap_err().starts_with("timeout_seconds:"));
    }

    #[test]
    fn the_twilio_form_keeps_the_stored_token_when_left_empty() {
        let form = TwilioForm { account_sid: "AC1".into(), bot: "concierge".into(), ..TwilioForm::default() };
        let body = form.body(Some("stored-token".into()));
        assert_eq!(body["auth_token"], "stored-token");
        assert!(body.get("api_base_url").is_none(), "{body}");
        let typed = TwilioForm { auth_token: " new-token ".into(), ..form };
        assert_eq!(typed.body(Some("stored-token".into()))["auth_token"], "new-token");
    }

    #[test]
    fn messaging_pairs_are_both_or_neither() {
        let none = MessagingForm::default().body().unwrap();
        assert_eq!(none, json!({"quiet_hours": null, "frequency_cap": null}));
        let form = MessagingForm {
            quiet_start: "21:00".into(),
            quiet_end: "08:00".into(),
            cap_max: "3".into(),
            cap_days: "7".into(),
        };
        let body = form.body().unwrap();
        assert_eq!(body["quiet_hours"], json!({"start": "21:00", "end": "08:00"}));
        assert_eq!(body["frequency_cap"], json!({"max": 3, "days": 7}));
        let half = MessagingForm { quiet_end: String::new(), ..form.clone() };
        assert!(half.body().unwrap_err().starts_with("quiet_hours:"));
        let words = MessagingForm { cap_days: "a week".into(), ..form };
        assert!(words.body().unwrap_err().starts_with("frequency_cap.days:"));
    }

    #[test]
    fn secrets_are_never_rendered() {
        let page = ChannelsPage {
            smtp: SmtpForm {
                host: "smtp.example.com".into(),
                password: "hunter2-secret".into(),
                ..SmtpForm::default()
            },
            smtp_password_set: true,
            twilio: TwilioForm { auth_token: "token-secret".into(), ..TwilioForm::default() },
            hooks_url: "http://localhost/hooks/ws_1".into(),
            ..ChannelsPage::default()
        };
        let refused = ChannelsNotice::Failed(ChannelsForm::Smtp, "host: <nope>".into());
        let html = channels_content(&page, &refused).into_string();
        assert!(!html.contains("hunter2-secret") && !html.contains("token-secret"), "{html}");
        assert!(html.contains(KEEP_SECRET_HINT) && html.contains("value=\"smtp.example.com\""), "{html}");
        assert_eq!(html.matches("data-testid=\"channels-error\"").count(), 1, "only in the refused form");
        assert!(html.contains("host: &lt;nope&gt;"), "{html}");
        assert!(html.contains("option value=\"starttls\""), "{html}");
    }
}
