//! The delivery pipeline: a campaign run is *planned* (every member of the segment gets one
//! delivery row, decided by the send policy, keyed so a re-plan adds nothing), then *sent* by
//! senders that claim due deliveries with a lease, render, call the provider and record what
//! happened.
//!
//! What is guaranteed (docs/engagement.md says it for users): a planned delivery is never lost (it
//! is a row before anything is sent); a delivery is sent at most once unless a sender dies after
//! the provider accepted it and before the result was stored, in which case the lease runs out
//! and it is sent again with the same `Message-ID` (email) — the only possible repeat. Consent,
//! reachability, quiet hours and caps are checked again when a batch is claimed, moments before
//! its sends, so an unsubscribe between planning and sending is honoured.

use crate::campaign::{self, CampaignSpec, Schedule};
use crate::policy::{self, Decision, MessagingSettings, Recipient, SendKind, Suppression};
use crate::template::{self, CompiledTemplate, RenderContext, TemplateSource};
use chrono::{DateTime, Duration, Utc};
use crossline_channels::apns::{self, ApnsConfig};
use crossline_channels::email::{Email, EmailConfig, EmailSender};
use crossline_channels::fcm::{self, FcmConfig};
use crossline_channels::outbound::SendError;
use crossline_channels::twilio::{self, TwilioConfig};
use crossline_channels::webhook::WebhookChannelConfig;
use crossline_channels::webpush::{self, Subscription, VapidKey};
use crossline_core::segment::Filter;
use crossline_core::{ConsentStatus, Identity, IdentityKind, Profile};
use crossline_engine::{Egress, EventRecorder};
use crossline_store::engage::{
    Delivery, DeliveryCount, DeliveryStatus, DeliveryUpdate, EngageObject, NewDelivery, ObjectKind, RecipientFacts,
};
use crossline_store::{DynStore, StoreError};
use futures::FutureExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The channel configuration key under which a workspace's messaging settings are kept.
pub const SETTINGS_KEY: &str = "settings.messaging";
/// ... and its key for signing tracked links.
const LINK_KEY: &str = "settings.link_key";
/// Where a workspace's VAPID key is kept (its private part, PKCS#8 in hex; never shown).
const VAPID_KEY: &str = "settings.vapid_key";

/// HMAC-SHA256 over the delivery and the URL, hex, first 32 characters (128 bits).
fn link_signature(key: &[u8], delivery_id: &str, url: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(delivery_id.as_bytes());
    mac.update(b"\n");
    mac.update(url.as_bytes());
    hex::encode(mac.finalize().into_bytes())[..32].to_owned()
}

/// Errors of the engagement layer, each with the field or object at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngageError {
    /// The input is wrong; `field` names where.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The action does not fit the object's state.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> EngageError {
    EngageError::Invalid { field: field.into(), message: message.into() }
}

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The sender's lease name, unique per node.
    pub holder: String,
    /// Deliveries claimed at once.
    pub batch: usize,
    /// Provider calls in flight at once.
    pub concurrency: usize,
    /// How long a claimed delivery is held.
    pub lease: Duration,
    /// Attempts before a retryable failure is final.
    pub max_attempts: u32,
    /// The public base URL (unsubscribe links, Twilio status callbacks).
    pub public_url: String,
    /// Consecutive connection failures of one campaign that pause it.
    pub pause_after_failures: u32,
    /// How often a segment whose filter looks back a number of days is evaluated again in full:
    /// its members change as time passes, with no event to notice it.
    pub segment_refresh: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            holder: format!("sender-{}", crossline_core::ids::new_random_id("n")),
            batch: 512,
            concurrency: 128,
            lease: Duration::seconds(60),
            max_attempts: 8,
            public_url: "http://127.0.0.1:8080".into(),
            pause_after_failures: 20,
            segment_refresh: Duration::minutes(15),
        }
    }
}

/// The engagement service.
pub struct Engage {
    store: DynStore,
    recorder: EventRecorder,
    egress: Egress,
    config: PipelineConfig,
    templates: Mutex<HashMap<(String, String), CachedTemplate>>,
    email: Mutex<HashMap<String, (Value, Arc<EmailSender>)>>,
    failures: Mutex<HashMap<String, u32>>,
    link_keys: Mutex<HashMap<String, Vec<u8>>>,
    /// Each workspace's VAPID key (Web Push), once read or made.
    vapid_keys: Mutex<HashMap<String, Arc<VapidKey>>>,
    /// VAPID `Authorization` headers by workspace and push-service origin, with their expiry
    /// (UNIX seconds): one signature per service every few hours, not one per message.
    vapid_headers: Mutex<HashMap<(String, String), (String, i64)>>,
    /// FCM access tokens by workspace: (the account they were issued to, the token, when to renew).
    fcm_tokens: Mutex<HashMap<String, (String, String, std::time::Instant)>>,
    /// One token request at a time per workspace (a batch of sends waits for it rather than each
    /// asking), and a refusal remembered for a while (a broken account does not ask per message).
    fcm_token_refresh: Mutex<HashMap<String, Arc<TokenTurn>>>,
    /// APNs provider tokens by workspace: (the key they were signed with, the token, when to renew).
    apns_tokens: Mutex<HashMap<String, (String, String, std::time::Instant)>>,
    stats: Mutex<HashMap<(String, String), CachedCounts>>,
    /// Calls per workspace and number, transactional ones too: a number is rung at most
    /// [`CALLS_PER_NUMBER_PER_HOUR`] times an hour (per node), whatever triggers the calls.
    calls_per_number: crossline_engine::rate::RateLimiter,
}

/// The most calls one number gets in an hour.
pub const CALLS_PER_NUMBER_PER_HOUR: f64 = 3.0;

/// A workspace's turn at asking for an FCM token, holding its last refusal and until when it stands.
type TokenTurn = tokio::sync::Mutex<Option<(Outcome, std::time::Instant)>>;

/// A campaign's counts and when they were counted.
type CachedCounts = (std::time::Instant, Arc<Vec<DeliveryCount>>);

/// How many times the counting took a running campaign's counts are reused for (at least
/// [`STATS_FRESH`]): pollers of a large campaign's stats cost at most ~5 % of one core.
const STATS_REUSE_FACTOR: u32 = 20;

/// How long a running campaign's counts are reused: a console or a script polling its stats
/// costs one count per second, not one per request (counting reads every delivery).
const STATS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A compiled template and the version (its `updated_at`) it was compiled from.
type CachedTemplate = (DateTime<Utc>, Arc<CompiledTemplate>, std::time::Instant);

/// How long a compiled template is used without asking the store whether it changed.
const TEMPLATE_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// What every recipient of one run shares.
struct Plan<'a> {
    campaign_id: &'a str,
    run_id: &'a str,
    spec: &'a CampaignSpec,
    settings: &'a MessagingSettings,
    workspace_zone: &'a str,
}

/// One recipient's planning inputs.
struct Planned {
    channel: String,
    address: String,
    decision: Decision,
}

impl Engage {
    /// A service on `store`, recording through `recorder`, calling HTTP providers through `egress`.
    pub fn new(store: DynStore, recorder: EventRecorder, egress: Egress, config: PipelineConfig) -> Self {
        Engage {
            store,
            recorder,
            egress,
            config,
            templates: Mutex::default(),
            email: Mutex::default(),
            failures: Mutex::default(),
            link_keys: Mutex::default(),
            vapid_keys: Mutex::default(),
            vapid_headers: Mutex::default(),
            fcm_tokens: Mutex::default(),
            fcm_token_refresh: Mutex::default(),
            apns_tokens: Mutex::default(),
            stats: Mutex::default(),
            calls_per_number: crossline_engine::rate::RateLimiter::new(
                crossline_engine::rate::Rate {
                    burst: CALLS_PER_NUMBER_PER_HOUR,
                    per_second: CALLS_PER_NUMBER_PER_HOUR / 3600.0,
                },
                100_000,
            ),
        }
    }

    /// The store.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// A workspace's messaging settings (defaults when never set).
    pub async fn settings(&self, workspace_id: &str) -> Result<MessagingSettings, EngageError> {
        Ok(self
            .store
            .channel(workspace_id, SETTINGS_KEY)
            .await?
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default())
    }

    /// Replaces a workspace's messaging settings.
    pub async fn put_settings(&self, workspace_id: &str, body: &Value) -> Result<MessagingSettings, EngageError> {
        let settings: MessagingSettings =
            serde_json::from_value(body.clone()).map_err(|err| invalid("body", err.to_string()))?;
        settings.validate().map_err(|message| invalid("body", message))?;
        self.store
            .put_channel(workspace_id, SETTINGS_KEY, &serde_json::to_value(&settings).unwrap_or_default())
            .await?;
        Ok(settings)
    }

    /// A filter not yet stored (a new segment's) resolved among the workspace's segments: a
    /// reference that is missing, circular or expands too far is an error naming it.
    pub async fn resolve_filter(&self, workspace_id: &str, filter: &Filter) -> Result<Filter, EngageError> {
        let segments = self.store.objects(workspace_id, ObjectKind::Segment).await?;
        resolve_filter_among(&segments, filter)
    }

    /// A segment's filter with every reference resolved (lists become membership lookups).
    pub async fn resolve_segment(&self, workspace_id: &str, segment_id: &str) -> Result<Filter, EngageError> {
        let segments = self.store.objects(workspace_id, ObjectKind::Segment).await?;
        resolve_among(&segments, segment_id)
    }

    /// A campaign's deliveries counted by treatment, status and reason. While it runs, counts are
    /// reused for [`STATS_FRESH`], or [`STATS_REUSE_FACTOR`] times as long as counting them took
    /// when that is longer (a 100,000-message campaign polled by a console and a script would
    /// otherwise spend its sender's CPU counting); otherwise they are counted afresh.
    pub async fn campaign_counts(
        &self,
        workspace_id: &str,
        campaign: &EngageObject,
    ) -> Result<Arc<Vec<DeliveryCount>>, EngageError> {
        let key = (workspace_id.to_owned(), campaign.id.clone());
        let running = campaign.status == campaign::status::RUNNING;
        if running
            && let Some((fresh_until, counts)) = self.stats.lock().expect("stats cache").get(&key)
            && std::time::Instant::now() < *fresh_until
        {
            return Ok(counts.clone());
        }
        let started = std::time::Instant::now();
        let counts = Arc::new(self.store.delivery_counts(workspace_id, &campaign.id).await?);
        let fresh_until = std::time::Instant::now() + STATS_FRESH.max(started.elapsed() * STATS_REUSE_FACTOR);
        let mut cache = self.stats.lock().expect("stats cache");
        if cache.len() > 1024 {
            cache.clear();
        }
        if running {
            cache.insert(key, (fresh_until, counts.clone()));
        } else {
            cache.remove(&key);
        }
        Ok(counts)
    }

    /// A compiled template, cached until it changes.
    pub async fn template(&self, workspace_id: &str, template_id: &str) -> Result<Arc<CompiledTemplate>, EngageError> {
        let key = (workspace_id.to_owned(), template_id.to_owned());
        // A send reads its template once per TEMPLATE_FRESH, not once per message.
        if let Some((_, compiled, checked)) = self.templates.lock().expect("template cache").get(&key)
            && checked.elapsed() < TEMPLATE_FRESH
        {
            return Ok(compiled.clone());
        }
        let stored = self
            .store
            .object(workspace_id, ObjectKind::Template, template_id)
            .await?
            .ok_or_else(|| EngageError::NotFound(format!("template {template_id} does not exist")))?;
        if let Some((at, compiled, checked)) = self.templates.lock().expect("template cache").get_mut(&key)
            && *at == stored.updated_at
        {
            *checked = std::time::Instant::now();
            return Ok(compiled.clone());
        }
        let source: TemplateSource =
            serde_json::from_value(stored.body.clone()).map_err(|err| invalid("template", err.to_string()))?;
        let compiled = Arc::new(template::compile(&source).map_err(|err| invalid(&err.field, err.to_string()))?);
        let mut cache = self.templates.lock().expect("template cache");
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, (stored.updated_at, compiled.clone(), std::time::Instant::now()));
        Ok(compiled)
    }

    /// Starts a campaign: checks that its segment and templates exist, then runs it now or
    /// schedules it. Returns the run id when it runs now.
    pub async fn launch(
        &self,
        workspace_id: &str,
        campaign_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, EngageError> {
        let stored = self
            .store
            .object(workspace_id, ObjectKind::Campaign, campaign_id)
            .await?
            .ok_or_else(|| EngageError::NotFound(format!("campaign {campaign_id} does not exist")))?;
        let spec: CampaignSpec =
            serde_json::from_value(stored.body.clone()).map_err(|err| invalid("campaign", err.to_string()))?;
        self.resolve_segment(workspace_id, &spec.segment_id).await.map_err(|err| match err {
            EngageError::NotFound(message) => EngageError::Conflict(format!(
                "the campaign cannot start: its segment {} is gone ({message})",
                spec.segment_id
            )),
            other => other,
        })?;
        for (field, template_id) in spec.templates() {
            if self.store.object(workspace_id, ObjectKind::Template, template_id).await?.is_none() {
                return Err(EngageError::Conflict(format!(
                    "the campaign cannot start: its template {template_id} ({field}) is gone"
                )));
            }
        }
        let (status, run) = match spec.schedule {
            Schedule::Now(_) => (campaign::status::RUNNING, Some(format!("{campaign_id}:now"))),
            // A triggered campaign runs from now on: each matching event plans one delivery.
            Schedule::Trigger { .. } => (campaign::status::RUNNING, None),
            _ => (campaign::status::SCHEDULED, None),
        };
        let mut body = stored.body.clone();
        body["current_run"] = run.clone().into();
        let mut updated = stored.clone();
        updated.body = body;
        updated.status = status.into();
        updated.updated_at = now;
        if stored.status != campaign::status::DRAFT {
            return Err(EngageError::Conflict(format!(
                "campaign {campaign_id} is {}, not a draft: it was started before",
                stored.status
            )));
        }
        self.store.put_object(workspace_id, &updated).await?;
        Ok(run)
    }

    /// Runs the scheduler and the senders until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tokio::join!(
            signal,
            self.schedule_loop(stopped.clone()),
            self.refresh_loop(stopped.clone()),
            self.clone().send_loop(stopped)
        );
    }

    /// Evaluates time-windowed segments again, every `segment_refresh` ([`Engage::refresh_once`]).
    async fn refresh_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut enqueued = None;
        while !*stopped.borrow() {
            match self.refresh_once(Utc::now(), &mut enqueued).await {
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "segment refresh failed"),
            }
            tokio::select! {
                _ = stopped.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        }
    }

    /// One pass of the membership refresh. Once per `segment_refresh` period (`enqueued` holds
    /// the last period this node enqueued), a job per segment whose filter looks back a number
    /// of days goes on the `segment.refresh` queue, keyed by segment and period so the nodes
    /// enqueue one between them; then this node runs the refresh jobs that are due, leased, so a
    /// node that dies mid-way leaves its job to another. How many segments it refreshed.
    pub async fn refresh_once(&self, now: DateTime<Utc>, enqueued: &mut Option<i64>) -> Result<usize, EngageError> {
        let period = self.config.segment_refresh.num_seconds().max(1);
        let slot = now.timestamp().div_euclid(period);
        if *enqueued != Some(slot) {
            let segments = self.store.objects_in_status(ObjectKind::Segment, "active").await?;
            let mut by_workspace: HashMap<&str, Vec<EngageObject>> = HashMap::new();
            for (workspace_id, segment) in &segments {
                by_workspace.entry(workspace_id.as_str()).or_default().push(segment.clone());
            }
            for (workspace_id, segments) in &by_workspace {
                for segment in segments.iter().filter(|s| s.body.get("filter").is_some_and(|f| !f.is_null())) {
                    if !resolve_among(segments, &segment.id).is_ok_and(|filter| filter.looks_back()) {
                        continue;
                    }
                    let job = crossline_store::NewJob {
                        queue: REFRESH_QUEUE.into(),
                        workspace_id: Some((*workspace_id).to_owned()),
                        idempotency_key: format!("{}:{slot}", segment.id),
                        payload: json!({"segment_id": segment.id}),
                        run_at: now,
                        max_attempts: 3,
                    };
                    self.store.enqueue(&job).await?;
                }
            }
            *enqueued = Some(slot);
        }
        let jobs = self.store.claim(REFRESH_QUEUE, &self.config.holder, 4, now, Duration::minutes(10)).await?;
        let mut refreshed = 0;
        for job in jobs {
            let segment_id = job.payload.get("segment_id").and_then(Value::as_str).unwrap_or_default();
            let Some(workspace_id) = job.workspace_id.as_deref() else {
                self.store.bury(job.id, &self.config.holder, "a refresh job without a workspace").await?;
                continue;
            };
            match self.refresh_segment(workspace_id, segment_id, now).await {
                Ok(()) => {
                    self.store.complete(job.id, &self.config.holder).await?;
                    refreshed += 1;
                }
                Err(err) => {
                    tracing::warn!(error = %err, segment_id, "refreshing a segment failed");
                    self.store.fail(job.id, &self.config.holder, &err.to_string(), now + Duration::minutes(1)).await?;
                }
            }
        }
        Ok(refreshed)
    }

    /// Evaluates a segment in full at `now` and stores who is in it, recording `segment.entered`
    /// and `segment.exited` for each change.
    pub async fn refresh_segment(
        &self,
        workspace_id: &str,
        segment_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), EngageError> {
        const PAGE: usize = 10_000;
        let Some(segment) = self.store.object(workspace_id, ObjectKind::Segment, segment_id).await? else {
            return Ok(());
        };
        let filter = self.resolve_segment(workspace_id, segment_id).await?;
        let mut members = Vec::new();
        loop {
            let page = self
                .store
                .segment_members(workspace_id, &filter, now, members.last().map(String::as_str), PAGE)
                .await?;
            let done = page.len() < PAGE;
            members.extend(page);
            if done {
                break;
            }
        }
        let (entered, left) = self.store.replace_members(workspace_id, segment_id, &members, now).await?;
        self.record_membership_changes(workspace_id, &segment, &entered, &left, now).await
    }

    /// Records `segment.entered` for each of `entered` and `segment.exited` for each of `left`
    /// (a refresh, an imported list), in batches of 500 events.
    pub async fn record_membership_changes(
        &self,
        workspace_id: &str,
        segment: &EngageObject,
        entered: &[String],
        left: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), EngageError> {
        let properties = json!({"segment_id": segment.id, "segment": segment.name});
        for (ids, name) in [(entered, "segment.entered"), (left, "segment.exited")] {
            for chunk in ids.chunks(500) {
                let mut events = Vec::with_capacity(chunk.len());
                for id in chunk {
                    let Some(profile) = self.store.profile(workspace_id, id).await? else { continue };
                    if let Some(identity) = profile.identities.first() {
                        events.push(crossline_engine::conversations::event(
                            identity,
                            name,
                            "engagement",
                            properties.clone(),
                            now,
                        ));
                    }
                }
                if let Err(err) = self.recorder.record(workspace_id, events).await {
                    tracing::warn!(error = %err, name, "could not record membership events");
                }
            }
        }
        Ok(())
    }

    /// Starts due campaigns and plans their runs, every half second. Planning a large run takes
    /// a while; the senders go on meanwhile and send its first pages as they are stored.
    async fn schedule_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while !*stopped.borrow() {
            if let Err(err) = self.schedule_once(Utc::now()).await {
                tracing::warn!(error = %err, "campaign scheduling failed");
            }
            tokio::select! {
                _ = stopped.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    }

    /// Claims due deliveries, decides each against the send policy with what the store says
    /// about its recipient now (one read per batch), and sends the rest with at most
    /// `concurrency` provider calls in flight. The next batch is claimed and decided while this one
    /// is being sent (one batch ahead), so the providers never wait for the database; results are
    /// stored as they come by [`Engage::record_results`].
    async fn send_loop(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency));
        let (results, finished) = tokio::sync::mpsc::channel(self.config.concurrency * 4);
        let recorder = tokio::spawn(self.clone().record_results(finished));
        let mut ahead = tokio::spawn(self.clone().claim_batch());
        'claiming: while !*stopped.borrow() {
            let fetched = (&mut ahead).await.ok().flatten();
            ahead = tokio::spawn(self.clone().claim_batch());
            let Some((steps, until)) = fetched else {
                // Nothing was due: wait a little before the claim already on its way is looked at.
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
                continue;
            };
            let mut steps = steps.into_iter();
            while let Some(step) = steps.next() {
                let job = match step {
                    Step::Settled(update) => {
                        let _ = results.send(update).await;
                        continue;
                    }
                    Step::Send(job) => job,
                };
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.ok(),
                    _ = stopped.changed() => None,
                };
                let Some(permit) = permit else {
                    // Shutting down: what was claimed and not started goes back to the queue now
                    // rather than when its lease runs out.
                    let unsent = std::iter::once(Step::Send(job)).chain(steps);
                    self.give_back(unsent, &results).await;
                    break 'claiming;
                };
                let (this, results) = (self.clone(), results.clone());
                tokio::spawn(async move {
                    let update = this.deliver(job, until).await;
                    let _ = results.send(update).await;
                    drop(permit);
                });
            }
        }
        // The batch claimed ahead goes back to the queue too.
        if let Ok(Some((steps, _))) = ahead.await {
            self.give_back(steps.into_iter(), &results).await;
        }
        // Every send started finishes and is recorded before the loop returns.
        let _ = permits.acquire_many(self.config.concurrency as u32).await;
        drop(results);
        let _ = recorder.await;
    }

    /// Claims the due deliveries of one batch and decides each ([`Engage::prepare`]), with the
    /// end of their lease; None when nothing was due (or the claim failed).
    async fn claim_batch(self: Arc<Self>) -> Option<(Vec<Step>, DateTime<Utc>)> {
        let now = Utc::now();
        let until = now + self.config.lease;
        let claimed = match self.store.claim_deliveries(&self.config.holder, now, until, self.config.batch).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(error = %err, "claiming deliveries failed");
                return None;
            }
        };
        if claimed.is_empty() {
            return None;
        }
        metrics::counter!("crossline_deliveries_processed_total").increment(claimed.len() as u64);
        Some((self.prepare(claimed, now).await, until))
    }

    /// Records what was decided and releases what was not sent, for a sender that stops.
    async fn give_back(&self, steps: impl Iterator<Item = Step>, results: &tokio::sync::mpsc::Sender<DeliveryUpdate>) {
        for step in steps {
            let update = match step {
                Step::Settled(update) => update,
                Step::Send(job) => released(job.delivery.new.id, "the sender stopped before sending it", Utc::now()),
            };
            let _ = results.send(update).await;
        }
    }

    /// Stores send results as they arrive, as many at once as have arrived (so a crash finds
    /// all but the last few milliseconds' stored). A store that fails is retried for as long as
    /// the deliveries' lease lasts; after that another sender may take them again.
    async fn record_results(self: Arc<Self>, mut finished: tokio::sync::mpsc::Receiver<DeliveryUpdate>) {
        let mut updates = Vec::with_capacity(256);
        while finished.recv_many(&mut updates, 256).await > 0 {
            let give_up = std::time::Instant::now() + self.config.lease.to_std().unwrap_or_default();
            let mut wait = std::time::Duration::from_millis(50);
            while let Err(err) = self.store.finish_deliveries(&self.config.holder, &updates).await {
                if std::time::Instant::now() + wait > give_up {
                    tracing::error!(error = %err, count = updates.len(), "send results could not be stored");
                    break;
                }
                tracing::warn!(error = %err, "storing send results failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            updates.clear();
        }
    }

    /// One scheduler pass: starts due scheduled campaigns, plans runs not yet planned (again
    /// after a crash: planning is idempotent), completes campaigns with nothing left to send.
    pub async fn schedule_once(&self, now: DateTime<Utc>) -> Result<(), EngageError> {
        for (workspace_id, stored) in
            self.store.objects_in_status(ObjectKind::Campaign, campaign::status::SCHEDULED).await?
        {
            let Ok(spec) = serde_json::from_value::<CampaignSpec>(stored.body.clone()) else { continue };
            let run = match &spec.schedule {
                // Local-time sends start when the earliest zone (UTC+14) reaches the time.
                Schedule::At { at, local_time } => {
                    let start = if *local_time { *at - Duration::hours(14) } else { *at };
                    (start <= now).then(|| format!("{}:at", stored.id))
                }
                Schedule::Cron { cron, time_zone } => {
                    let zone: chrono_tz::Tz = time_zone.parse().unwrap_or(chrono_tz::UTC);
                    let after = stored
                        .body
                        .get("last_run_at")
                        .and_then(Value::as_str)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or(stored.created_at);
                    let next = croner::parser::CronParser::new()
                        .parse(cron)
                        .ok()
                        .and_then(|cron| cron.find_next_occurrence(&after.with_timezone(&zone), false).ok());
                    next.map(|next| next.with_timezone(&Utc))
                        .filter(|next| *next <= now)
                        .map(|next| format!("{}:{}", stored.id, next.timestamp()))
                }
                _ => None,
            };
            let Some(run) = run else { continue };
            let mut updated = stored.clone();
            updated.body["current_run"] = run.into();
            if matches!(spec.schedule, Schedule::Cron { .. }) {
                updated.body["last_run_at"] = now.to_rfc3339().into();
            }
            updated.status = campaign::status::RUNNING.into();
            updated.updated_at = now;
            self.store.put_object(&workspace_id, &updated).await?;
        }
        for (workspace_id, stored) in
            self.store.objects_in_status(ObjectKind::Campaign, campaign::status::RUNNING).await?
        {
            let Some(run) = stored.body.get("current_run").and_then(Value::as_str).map(str::to_owned) else { continue };
            let planned = stored
                .body
                .get("planned_runs")
                .and_then(Value::as_array)
                .is_some_and(|runs| runs.iter().any(|r| r.as_str() == Some(&run)));
            if !planned {
                match self.plan(&workspace_id, &stored.id, &run, now).await {
                    Ok(count) => {
                        tracing::info!(workspace = %workspace_id, campaign = %stored.id, run, count, "campaign run planned")
                    }
                    Err(err) => {
                        let reason = format!("the run could not be planned: {err}");
                        self.pause(&workspace_id, &stored.id, &reason).await;
                        continue;
                    }
                }
                // Re-read: a pause may have come in while planning.
                let Some(mut fresh) = self.store.object(&workspace_id, ObjectKind::Campaign, &stored.id).await? else {
                    continue;
                };
                let mut runs = fresh.body.get("planned_runs").and_then(Value::as_array).cloned().unwrap_or_default();
                runs.push(run.into());
                // Only the current run is ever looked up: a recurring campaign keeps its last 50.
                let excess = runs.len().saturating_sub(50);
                runs.drain(..excess);
                fresh.body["planned_runs"] = Value::Array(runs);
                self.store.put_object(&workspace_id, &fresh).await?;
                continue;
            }
            if !self.store.has_pending_deliveries(&workspace_id, &stored.id).await? {
                let recurring = stored.body.get("schedule").is_some_and(|s| s.get("cron").is_some());
                let next = if recurring { campaign::status::SCHEDULED } else { campaign::status::COMPLETED };
                self.store
                    .set_object_status(
                        &workspace_id,
                        ObjectKind::Campaign,
                        &stored.id,
                        next,
                        None,
                        &[campaign::status::RUNNING],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Plans one run of a campaign: a delivery per segment member, decided by the send policy.
    /// Idempotent: planning the same run again adds nothing.
    pub async fn plan(
        &self,
        workspace_id: &str,
        campaign_id: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, EngageError> {
        let stored = self
            .store
            .object(workspace_id, ObjectKind::Campaign, campaign_id)
            .await?
            .ok_or_else(|| EngageError::NotFound(format!("campaign {campaign_id} does not exist")))?;
        let spec: CampaignSpec =
            serde_json::from_value(stored.body.clone()).map_err(|err| invalid("campaign", err.to_string()))?;
        let filter = self.resolve_segment(workspace_id, &spec.segment_id).await?;
        let settings = self.settings(workspace_id).await?;
        let workspace_zone =
            self.store.workspace(workspace_id).await?.map(|w| w.time_zone).unwrap_or_else(|| "UTC".into());
        let mut planned = 0usize;
        let mut queued_total = 0u64;
        let mut after: Option<String> = None;
        let since = cap_since(&settings, &spec, now);
        let uses_push = spec.channels.iter().any(|channel| channel == "push");
        // A page is read while the previous one is written: the reads run on a reader
        // connection beside the writer.
        let mut writing: Option<futures::future::BoxFuture<'static, Result<usize, StoreError>>> = None;
        loop {
            let read = async {
                let page = self.store.segment_members(workspace_id, &filter, now, after.as_deref(), 1000).await?;
                if page.is_empty() {
                    return Ok::<_, StoreError>(None);
                }
                let facts = self.store.recipients(workspace_id, &page, since, uses_push).await?;
                Ok(Some((page, facts)))
            };
            let read = match writing.take() {
                Some(write) => {
                    let (read, written) = tokio::join!(read, write);
                    planned += written?;
                    read?
                }
                None => read.await?,
            };
            let Some((page, mut facts)) = read else { break };
            let mut rows = Vec::with_capacity(page.len());
            for id in &page {
                let Some(facts) = facts.remove(id) else { continue };
                let plan =
                    Plan { campaign_id, run_id, spec: &spec, settings: &settings, workspace_zone: &workspace_zone };
                let mut row = self.plan_row(workspace_id, &plan, &facts, now, now).await?;
                if row.status == DeliveryStatus::Queued {
                    queued_total += 1;
                    if spec.limits.total.is_some_and(|total| queued_total > total) {
                        row.status = DeliveryStatus::Suppressed;
                        row.reason = Some(Suppression::Limit.as_str().into());
                    } else if let Some(per_second) = spec.limits.per_second {
                        // The rate is kept by spacing the run's messages in time: every node and
                        // every restart sends them no sooner than planned.
                        let offset = (queued_total - 1) * 1000 / u64::from(per_second.max(1));
                        row.run_at = row.run_at.max(now + Duration::milliseconds(offset as i64));
                    }
                }
                rows.push(row);
            }
            after = page.last().cloned();
            let (store, workspace) = (self.store.clone(), workspace_id.to_owned());
            writing = Some(Box::pin(async move { store.insert_deliveries(&workspace, &rows).await }));
        }
        if let Some(write) = writing {
            planned += write.await?;
        }
        Ok(planned)
    }

    /// Follows the event stream until `shutdown`: every stored event updates its profile's
    /// memberships (entering or leaving a segment is recorded as `segment.entered` /
    /// `segment.exited`) and starts the triggered campaigns it matches. A durable consumer shared
    /// by the nodes: each batch is handled once (again after a crash, harmlessly: memberships and
    /// triggered deliveries are idempotent).
    pub async fn listen(self: Arc<Self>, bus: crossline_bus::DynBus, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let config = crossline_bus::DurableConfig {
            name: "engage".into(),
            filter: "events.>".into(),
            ack_wait: std::time::Duration::from_secs(30),
        };
        let mut consumer = loop {
            match bus.durable(&config).await {
                Ok(consumer) => break consumer,
                Err(err) => {
                    tracing::warn!(error = %err, "the engagement listener cannot subscribe; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        loop {
            let delivery = tokio::select! {
                _ = &mut shutdown => return,
                next = consumer.next() => next,
            };
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(err) => {
                    tracing::warn!(error = %err, "the engagement listener lost the bus");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let handled = match serde_json::from_slice::<StreamBatch>(&delivery.message().payload) {
                // A bug that panics on one batch must not stop the listener for every workspace
                // (nor, redelivered, on every node): the batch is logged and skipped.
                Ok(batch) => {
                    match std::panic::AssertUnwindSafe(self.on_events(&batch, Utc::now())).catch_unwind().await {
                        Ok(handled) => handled,
                        Err(_) => {
                            metrics::counter!("crossline_panics_total", "where" => "engage_listener").increment(1);
                            tracing::error!(workspace = %batch.workspace_id, "handling an event batch panicked; skipped");
                            Ok(())
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "an event batch on the bus could not be read; skipped");
                    Ok(())
                }
            };
            let acked = match handled {
                Ok(()) => delivery.ack().await,
                Err(err) => {
                    tracing::warn!(error = %err, "engagement could not handle events; they come again");
                    delivery.nack(std::time::Duration::from_secs(1)).await
                }
            };
            if let Err(err) = acked {
                tracing::warn!(error = %err, "acknowledging an event batch failed");
            }
        }
    }

    /// Memberships and triggers for one batch of stored events.
    pub async fn on_events(&self, batch: &StreamBatch, now: DateTime<Utc>) -> Result<(), EngageError> {
        let workspace_id = batch.workspace_id.as_str();
        let relevant: Vec<&StreamEvent> = batch.events.iter().filter(|event| event.profile_id.is_some()).collect();
        // The engine's own membership events change no membership (they may trigger campaigns).
        let membership_event =
            |event: &StreamEvent| event.event.as_deref().is_some_and(|name| name.starts_with("segment."));
        if relevant.is_empty() {
            return Ok(());
        }
        // Segments and campaigns, read once per batch (one statement where the store can), the
        // segments resolved from that list (not one read per segment).
        let (stored, campaigns): (Vec<EngageObject>, Vec<EngageObject>) = self
            .store
            .objects_of_kinds(workspace_id, &[ObjectKind::Segment, ObjectKind::Campaign])
            .await?
            .into_iter()
            .partition(|object| object.kind == ObjectKind::Segment);
        let segments: Vec<(EngageObject, Filter)> = stored
            .iter()
            .filter(|segment| segment.body.get("filter").is_some_and(|f| !f.is_null()))
            .filter_map(|segment| Some((segment.clone(), resolve_among(&stored, &segment.id).ok()?)))
            .collect();
        let campaigns: Vec<(EngageObject, CampaignSpec)> = campaigns
            .into_iter()
            .filter_map(|campaign| {
                let spec: CampaignSpec = serde_json::from_value(campaign.body.clone()).ok()?;
                Some((campaign, spec))
            })
            .collect();
        let triggered: Vec<&(EngageObject, CampaignSpec)> = campaigns
            .iter()
            .filter(|(campaign, spec)| {
                campaign.status == campaign::status::RUNNING && matches!(spec.schedule, Schedule::Trigger { .. })
            })
            .collect();
        let converting: Vec<&(EngageObject, CampaignSpec)> =
            campaigns.iter().filter(|(_, spec)| spec.conversion.is_some()).collect();
        if segments.is_empty() && triggered.is_empty() && converting.is_empty() {
            return Ok(());
        }
        let mut profiles: Vec<&str> = relevant.iter().filter_map(|event| event.profile_id.as_deref()).collect();
        profiles.sort_unstable();
        profiles.dedup();
        for profile_id in profiles {
            let Some(profile) = self.store.profile(workspace_id, profile_id).await? else { continue };
            let query = crossline_store::EventQuery { limit: crate::evaluate::EVENT_WINDOW, kind: None };
            let events = self.store.events(workspace_id, &profile.id, &query).await?;
            let unreachable = self.store.address_states(workspace_id, &profile.id).await?;
            let lists = self.store.memberships(workspace_id, &profile.id).await?;
            let facts = crate::evaluate::Facts {
                profile: &profile,
                events: &events,
                unreachable: &unreachable,
                lists: &lists,
                now,
            };
            let mut in_segment: HashMap<&str, bool> = HashMap::new();
            let changes_memberships = relevant
                .iter()
                .any(|event| event.profile_id.as_deref() == Some(profile_id) && !membership_event(event));
            for (segment, filter) in segments.iter().filter(|_| changes_memberships) {
                let member = crate::evaluate::matches(filter, &facts);
                in_segment.insert(segment.id.as_str(), member);
                if self.store.set_membership(workspace_id, &segment.id, &profile.id, member, now).await? {
                    let name = if member { "segment.entered" } else { "segment.exited" };
                    self.record_on_profile(
                        workspace_id,
                        &profile,
                        name,
                        json!({"segment_id": segment.id, "segment": segment.name}),
                        now,
                    )
                    .await;
                }
            }
            for event in relevant.iter().filter(|event| event.profile_id.as_deref() == Some(profile_id)) {
                for (campaign, spec) in converting.iter().map(|pair| (&pair.0, &pair.1)) {
                    let Some(conversion) = &spec.conversion else { continue };
                    if event.event.as_deref() == Some(conversion.event.as_str()) {
                        self.convert(workspace_id, campaign, conversion, &profile, event, now).await?;
                    }
                }
                for (campaign, spec) in triggered.iter().map(|pair| (&pair.0, &pair.1)) {
                    let Schedule::Trigger { trigger } = &spec.schedule else { continue };
                    if event.event.as_deref() != Some(trigger.event.as_str()) {
                        continue;
                    }
                    let conditions = trigger.conditions();
                    if !conditions.is_empty() {
                        let empty = serde_json::Map::new();
                        let properties = events
                            .iter()
                            .find(|stored| stored.id == event.message_id)
                            .map_or(&empty, |stored| &stored.properties);
                        if !conditions.iter().all(|condition| crate::evaluate::value_test(properties, condition)) {
                            continue;
                        }
                    }
                    let audience = match in_segment.get(spec.segment_id.as_str()) {
                        Some(member) => *member,
                        None => match self.resolve_segment(workspace_id, &spec.segment_id).await {
                            Ok(filter) => crate::evaluate::matches(&filter, &facts),
                            Err(_) => false,
                        },
                    };
                    if !audience {
                        continue;
                    }
                    self.trigger(workspace_id, campaign, spec, &profile, &events, event, now).await?;
                }
            }
        }
        Ok(())
    }

    /// Plans one triggered delivery: keyed by campaign and event, so a redelivered event adds none.
    #[allow(clippy::too_many_arguments)]
    async fn trigger(
        &self,
        workspace_id: &str,
        campaign: &EngageObject,
        spec: &CampaignSpec,
        profile: &Profile,
        events: &[crossline_store::StoredEvent],
        event: &StreamEvent,
        now: DateTime<Utc>,
    ) -> Result<(), EngageError> {
        let Schedule::Trigger { trigger } = &spec.schedule else { return Ok(()) };
        let settings = self.settings(workspace_id).await?;
        let workspace_zone =
            self.store.workspace(workspace_id).await?.map(|w| w.time_zone).unwrap_or_else(|| "UTC".into());
        let run_id = format!("{}:{}", campaign.id, event.message_id);
        let plan = Plan {
            campaign_id: &campaign.id,
            run_id: &run_id,
            spec,
            settings: &settings,
            workspace_zone: &workspace_zone,
        };
        let earliest =
            event.timestamp.max(now - Duration::minutes(5)) + Duration::seconds(trigger.delay_seconds as i64);
        let asked = [profile.id.clone()];
        let push = spec.channels.iter().any(|channel| channel == "push");
        let Some(facts) = self
            .store
            .recipients(workspace_id, &asked, cap_since(&settings, spec, now), push)
            .await?
            .remove(&profile.id)
        else {
            return Ok(());
        };
        let mut row = self.plan_row(workspace_id, &plan, &facts, earliest.max(now), now).await?;
        row.idempotency_key = run_id.clone();
        row.event = events.iter().find(|stored| stored.id == event.message_id).map(|stored| {
            json!({"id": stored.id, "type": stored.kind, "name": stored.event, "properties": stored.properties,
                   "timestamp": stored.timestamp.to_rfc3339(), "channel": stored.channel})
        });
        self.store.insert_deliveries(workspace_id, &[row]).await?;
        Ok(())
    }

    /// A conversion event after a message of a campaign: the newest such delivery within the
    /// window counts as converted (once).
    async fn convert(
        &self,
        workspace_id: &str,
        campaign: &EngageObject,
        conversion: &campaign::Conversion,
        profile: &Profile,
        event: &StreamEvent,
        now: DateTime<Utc>,
    ) -> Result<(), EngageError> {
        let Some(since) = event.timestamp.checked_sub_signed(Duration::hours(i64::from(conversion.within_hours)))
        else {
            return Ok(());
        };
        let deliveries = self.store.profile_deliveries(workspace_id, &profile.id, since, 100).await?;
        let converted = deliveries.into_iter().find(|delivery| {
            delivery.new.campaign_id.as_deref() == Some(campaign.id.as_str())
                && delivery.sent_at.is_some_and(|sent| sent <= event.timestamp)
        });
        if let Some(delivery) = converted
            && self
                .store
                .record_engagement(workspace_id, &delivery.new.id, crossline_store::engage::Engagement::Converted, now)
                .await?
        {
            let properties = json!({"event": conversion.event, "event_id": event.message_id});
            self.record(workspace_id, &delivery.new, "delivery.converted", properties, now).await;
        }
        Ok(())
    }

    async fn record_on_profile(
        &self,
        workspace_id: &str,
        profile: &Profile,
        name: &str,
        properties: Value,
        now: DateTime<Utc>,
    ) {
        let Some(identity) = profile.identities.first() else { return };
        let event = crossline_engine::conversations::event(identity, name, "engagement", properties, now);
        if let Err(err) = self.recorder.record(workspace_id, vec![event]).await {
            tracing::warn!(error = %err, name, "could not record a membership event");
        }
    }

    /// One recipient's delivery: treatment, channel, the policy's decision, when to send.
    async fn plan_row(
        &self,
        workspace_id: &str,
        plan: &Plan<'_>,
        facts: &RecipientFacts,
        earliest: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<NewDelivery, EngageError> {
        let spec = plan.spec;
        let profile = &facts.profile;
        let (treatment, template_id) = spec.assign(plan.campaign_id, &profile.id);
        let mut row = NewDelivery {
            // Time-ordered: the table is clustered on the id, so a run's rows are written (and
            // claimed) side by side; 80 random bits keep the public links unguessable.
            id: crossline_core::ids::new_sortable_secret_id("dlv"),
            // One delivery per run and profile: its treatment and channel follow from them.
            idempotency_key: format!("{}:{}", plan.run_id, profile.id),
            campaign_id: Some(plan.campaign_id.to_owned()),
            run_id: Some(plan.run_id.to_owned()),
            profile_id: profile.id.clone(),
            treatment,
            channel: spec.channels[0].clone(),
            address: String::new(),
            template_id: template_id.map(str::to_owned),
            kind: spec.kind.as_str().to_owned(),
            status: DeliveryStatus::Queued,
            reason: None,
            deferred: false,
            run_at: earliest,
            event: None,
            time_zone: None,
        };
        if template_id.is_none() {
            row.status = DeliveryStatus::Suppressed;
            row.reason = Some(Suppression::Holdout.as_str().into());
            return Ok(row);
        }
        let zone = self.time_zone(workspace_id, profile, plan.workspace_zone, plan.settings, spec).await?;
        row.time_zone = Some(zone.name().to_owned());
        let send_at = match &spec.schedule {
            Schedule::At { at, local_time: true } => policy::local_instant(at.naive_utc(), zone).max(now),
            _ => earliest,
        };
        row.run_at = send_at;
        let choice = choose(spec, plan.settings, facts, zone, send_at);
        if let Some(template_id) = spec.templates.get(&choice.channel) {
            row.template_id = Some(template_id.clone());
        }
        row.channel = choice.channel;
        row.address = choice.address;
        match choice.decision {
            Decision::Send => {}
            Decision::Defer(until) => {
                row.deferred = true;
                row.run_at = until;
            }
            Decision::Suppress(reason) => {
                row.status = DeliveryStatus::Suppressed;
                row.reason = Some(reason.as_str().into());
            }
        }
        Ok(row)
    }

    async fn time_zone(
        &self,
        workspace_id: &str,
        profile: &Profile,
        workspace_zone: &str,
        settings: &MessagingSettings,
        spec: &CampaignSpec,
    ) -> Result<chrono_tz::Tz, EngageError> {
        let trait_zone = profile.traits.get("timezone").and_then(Value::as_str);
        let local = matches!(spec.schedule, Schedule::At { local_time: true, .. });
        if trait_zone.is_some() || (settings.quiet_hours.is_none() && !local) {
            return Ok(policy::customer_time_zone(trait_zone, None, workspace_zone));
        }
        // Only needed for quiet hours: the newest event that carried `context.timezone`.
        let query = crossline_store::EventQuery { limit: 20, ..Default::default() };
        let events = self.store.events(workspace_id, &profile.id, &query).await?;
        let context_zone =
            events.iter().find_map(|event| event.context.get("timezone").and_then(Value::as_str).map(str::to_owned));
        Ok(policy::customer_time_zone(None, context_zone.as_deref(), workspace_zone))
    }

    /// What to do with each claimed delivery: settled at once (suppressed, deferred, a channel
    /// that is not configured) or sent. The recipients' profiles, consent, unreachable addresses
    /// and recent sends are read once per workspace in the batch, at claim time — moments before
    /// the sends, so an unsubscribe between planning and sending is honoured.
    async fn prepare(&self, claimed: Vec<(String, Delivery)>, now: DateTime<Utc>) -> Vec<Step> {
        let mut by_workspace: Vec<(String, Vec<Delivery>)> = Vec::new();
        for (workspace, delivery) in claimed {
            match by_workspace.iter_mut().find(|(id, _)| *id == workspace) {
                Some((_, deliveries)) => deliveries.push(delivery),
                None => by_workspace.push((workspace, vec![delivery])),
            }
        }
        let mut steps = Vec::new();
        for (workspace, deliveries) in by_workspace {
            let context = match self.workspace_batch(&workspace, &deliveries, now).await {
                Ok(context) => context,
                Err(outcome) => {
                    for delivery in deliveries {
                        let update = self.settle(&workspace, &delivery, Err(outcome.clone()), now).await;
                        steps.push(Step::Settled(update));
                    }
                    continue;
                }
            };
            // Marketing sends granted in this batch count against the cap of the next ones.
            let mut granted: HashMap<String, u64> = HashMap::new();
            for delivery in deliveries {
                match self.decide(&workspace, &context, &delivery, &mut granted, now).await {
                    Ok(job) => steps.push(Step::Send(Box::new(job))),
                    Err(outcome) => {
                        steps.push(Step::Settled(self.settle(&workspace, &delivery, Err(outcome), now).await))
                    }
                }
            }
        }
        steps
    }

    /// What one workspace's deliveries in a batch share.
    async fn workspace_batch(
        &self,
        workspace_id: &str,
        deliveries: &[Delivery],
        now: DateTime<Utc>,
    ) -> Result<WorkspaceBatch, Outcome> {
        // The store failing is not the channel failing: the batch goes back to the queue for a bit.
        let retry = |err: &dyn std::fmt::Display| Outcome::Released(err.to_string(), Duration::seconds(5));
        let settings = self.settings(workspace_id).await.map_err(|err| retry(&err))?;
        let workspace_zone = self
            .store
            .workspace(workspace_id)
            .await
            .map_err(|err| retry(&err))?
            .map(|w| w.time_zone)
            .unwrap_or_else(|| "UTC".into());
        let mut ids: Vec<String> = deliveries.iter().map(|d| d.new.profile_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let marketing = deliveries.iter().any(|d| d.new.kind == SendKind::Marketing.as_str());
        let since = settings.frequency_cap.filter(|_| marketing).map(|cap| now - Duration::days(i64::from(cap.days)));
        let uses = |channel: &str| deliveries.iter().any(|d| d.new.channel == channel);
        let facts = self.store.recipients(workspace_id, &ids, since, uses("push")).await.map_err(|err| retry(&err))?;
        let email = if uses("email") { Some(self.email_sender(workspace_id).await) } else { None };
        let link_key = match &email {
            Some(Ok(_)) => Some(self.link_key(workspace_id).await.map_err(|err| retry(&err))?),
            _ => None,
        };
        let twilio = if uses("sms") || uses("whatsapp") || uses("voice") {
            Some(self.twilio(workspace_id).await.map(Arc::new))
        } else {
            None
        };
        let vapid =
            if uses("push") { Some(self.vapid_key(workspace_id).await.map_err(|err| retry(&err))?) } else { None };
        let fcm =
            if uses("push") { Some(self.channel_config(workspace_id, "fcm", "FCM").await.map(Arc::new)) } else { None };
        let apns = if uses("push") {
            Some(self.channel_config(workspace_id, "apns", "APNs").await.map(Arc::new))
        } else {
            None
        };
        let webhook = if uses("webhook") {
            Some(self.channel_config(workspace_id, "webhook", "The webhook channel").await.map(Arc::new))
        } else {
            None
        };
        Ok(WorkspaceBatch { settings, workspace_zone, facts, email, link_key, twilio, vapid, fcm, apns, webhook })
    }

    /// The send policy for one claimed delivery, as things are now: consent, reachability, quiet
    /// hours and the cap (a retry or a resumed campaign keeps them).
    async fn decide(
        &self,
        workspace_id: &str,
        context: &WorkspaceBatch,
        delivery: &Delivery,
        granted: &mut HashMap<String, u64>,
        now: DateTime<Utc>,
    ) -> Result<SendJob, Outcome> {
        let d = &delivery.new;
        let Some(facts) = context.facts.get(&d.profile_id) else {
            // Erased since it was planned.
            return Err(Outcome::Suppressed(Suppression::Unreachable));
        };
        let profile = &facts.profile;
        if consent_of(profile, &d.channel) == ConsentStatus::Unsubscribed {
            return Err(Outcome::Suppressed(Suppression::Unsubscribed));
        }
        if facts.unreachable.iter().any(|state| state.value == d.address) {
            return Err(Outcome::Suppressed(Suppression::Unreachable));
        }
        // A trait set since planning wins; else the zone planning found (it may have come from an
        // event's `context.timezone`, which is not read again here).
        let zone = policy::customer_time_zone(
            profile.traits.get("timezone").and_then(Value::as_str),
            d.time_zone.as_deref(),
            &context.workspace_zone,
        );
        if d.kind == SendKind::Marketing.as_str() {
            let already = granted.get(&profile.id).copied().unwrap_or(0);
            let recipient = Recipient {
                consent: consent_of(profile, &d.channel),
                has_address: !d.address.is_empty(),
                unreachable: false,
                time_zone: zone,
                recent_marketing_sends: facts.marketing_sends + already,
            };
            match policy::decide(&context.settings, SendKind::Marketing, &recipient, now) {
                Decision::Send => {
                    granted.insert(profile.id.clone(), already + 1);
                }
                Decision::Defer(until) => return Err(Outcome::Deferred(until)),
                Decision::Suppress(reason) => return Err(Outcome::Suppressed(reason)),
            }
        }
        let template = match self.delivery_template(workspace_id, d).await {
            Ok(compiled) => compiled,
            Err(EngageError::Store(err)) => return Err(Outcome::Retry(err.to_string(), None)),
            Err(EngageError::NotFound(_)) if d.template_id.is_none() => {
                return Err(Outcome::Failed("the delivery has no template".into(), None));
            }
            Err(err) => return Err(Outcome::Failed(err.to_string(), None)),
        };
        // Toll fraud rings premium-rate numbers (checking one costs ~20 µs, so only calls are checked).
        if d.channel == "voice" && crossline_core::identity::is_costly_number(&d.address) {
            return Err(Outcome::Failed("premium-rate and shared-cost numbers are never called".into(), None));
        }
        if d.channel == "voice"
            && !self.calls_per_number.allow(&format!("{workspace_id}/{}", d.address), std::time::Instant::now())
        {
            return Err(Outcome::Suppressed(Suppression::FrequencyCap));
        }
        let via = match d.channel.as_str() {
            "email" => match (&context.email, &context.link_key) {
                (Some(Ok(sender)), Some(key)) => Via::Email(sender.clone(), key.clone()),
                (Some(Err(outcome)), _) => return Err(outcome.clone()),
                _ => return Err(Outcome::Misconfigured("email is not configured".into())),
            },
            "sms" | "whatsapp" | "voice" => match &context.twilio {
                Some(Ok(config)) if d.channel == "voice" => Via::Call(config.clone()),
                Some(Ok(config)) => Via::Sms(config.clone()),
                Some(Err(outcome)) => return Err(outcome.clone()),
                None => return Err(Outcome::Misconfigured("Twilio is not configured".into())),
            },
            "webhook" => match &context.webhook {
                Some(Ok(config)) => Via::Webhook(config.clone()),
                Some(Err(outcome)) => return Err(outcome.clone()),
                None => return Err(Outcome::Misconfigured("the webhook channel is not configured".into())),
            },
            "in_app" => Via::InApp,
            "push" => match push_target(facts, &d.address) {
                // Registered to someone else since planning, or removed: not this customer's.
                None => return Err(Outcome::Suppressed(Suppression::Unreachable)),
                Some(PushTarget::Web(subscription)) => match &context.vapid {
                    Some(key) => Via::WebPush(key.clone(), Box::new(subscription)),
                    None => return Err(Outcome::Released("the VAPID key was not read".into(), Duration::seconds(5))),
                },
                // A platform the workspace has not configured fails that one message, not the
                // campaign: a web push campaign goes on when a customer also has an app token.
                Some(PushTarget::Device { platform: "fcm" }) => match &context.fcm {
                    Some(Ok(config)) => Via::Fcm(config.clone()),
                    Some(Err(Outcome::Misconfigured(why))) => return Err(Outcome::Failed(why.clone(), None)),
                    Some(Err(outcome)) => return Err(outcome.clone()),
                    None => return Err(Outcome::Failed("FCM is not configured".into(), None)),
                },
                Some(PushTarget::Device { platform: "apns" }) => match &context.apns {
                    Some(Ok(config)) => Via::Apns(config.clone()),
                    Some(Err(Outcome::Misconfigured(why))) => return Err(Outcome::Failed(why.clone(), None)),
                    Some(Err(outcome)) => return Err(outcome.clone()),
                    None => return Err(Outcome::Failed("APNs is not configured".into(), None)),
                },
                Some(PushTarget::Device { platform }) => {
                    return Err(Outcome::Failed(format!("{platform} push is not configured"), None));
                }
            },
            other => return Err(Outcome::Failed(format!("no sender for channel {other}"), None)),
        };
        Ok(SendJob {
            workspace_id: workspace_id.to_owned(),
            delivery: delivery.clone(),
            profile: json!({"id": profile.id, "traits": profile.traits}),
            zone,
            template,
            via,
        })
    }

    /// Sends one delivery, within what is left of its claim, and settles the outcome.
    async fn deliver(&self, job: Box<SendJob>, claimed_until: DateTime<Utc>) -> DeliveryUpdate {
        let left = (claimed_until - SEND_MARGIN - Utc::now()).to_std().ok().filter(|left| *left >= MIN_SEND_TIME);
        let outcome = match left {
            // Too little of the lease is left to be sure nobody else takes it mid-send.
            None => Err(Outcome::Released("the claim ran out before the send started".into(), Duration::zero())),
            Some(left) => match tokio::time::timeout(left, self.send(&job)).await {
                Ok(outcome) => outcome,
                // A call may have been placed: never rung twice.
                Err(_) if job.delivery.new.channel == "voice" => {
                    Err(Outcome::Failed("Twilio did not answer in time; the call is not retried".into(), None))
                }
                Err(_) => Err(Outcome::Retry("the provider did not answer before the claim ran out".into(), None)),
            },
        };
        self.settle(&job.workspace_id, &job.delivery, outcome, Utc::now()).await
    }

    /// Renders and hands one message to its provider.
    async fn send(&self, job: &SendJob) -> Result<Sent, Outcome> {
        let (workspace_id, d) = (job.workspace_id.as_str(), &job.delivery.new);
        let base = self.config.public_url.trim_end_matches('/');
        let unsubscribe_url = format!("{base}/u/{workspace_id}/{}", d.id);
        let context = RenderContext {
            profile: &job.profile,
            event: d.event.as_ref(),
            unsubscribe_url: &unsubscribe_url,
            time_zone: job.zone,
        };
        let rendered = job.template.render(&context).map_err(|err| Outcome::Failed(err.to_string(), None))?;
        match &job.via {
            Via::Email(sender, key) => {
                let message_id = format!("{}@crossline", d.id);
                // Opens and clicks: a pixel, and links through a redirect signed per delivery.
                let html = rendered.html.as_deref().map(|html| {
                    let tracked = template::track_links(html, &unsubscribe_url, |_, url| {
                        let signature = link_signature(key, &d.id, url);
                        let target: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
                        format!("{base}/c/{workspace_id}/{}?u={target}&s={signature}", d.id)
                    });
                    template::add_open_pixel(&tracked, &format!("{base}/o/{workspace_id}/{}", d.id))
                });
                let headers = [("X-Crossline-Delivery", d.id.as_str())];
                let email = Email {
                    to: &d.address,
                    subject: rendered.subject.as_deref().unwrap_or_default(),
                    html: html.as_deref(),
                    text: &rendered.text,
                    message_id: &message_id,
                    // One-click unsubscribe (RFC 8058) needs https; over plain http the link stays
                    // in the body and the mailto: form in the header.
                    unsubscribe_url: unsubscribe_url.starts_with("https://").then_some(unsubscribe_url.as_str()),
                    headers: &headers,
                };
                sender
                    .send(&email)
                    .await
                    .map(|receipt| Sent { provider_id: receipt.provider_id })
                    .map_err(Outcome::from)
            }
            Via::WebPush(key, subscription) => self.send_web_push(job, key, subscription, &rendered).await,
            Via::Fcm(config) => self.send_fcm(job, config, &rendered).await,
            Via::Apns(config) => self.send_apns(job, config, &rendered).await,
            Via::Webhook(config) => self.send_webhook(job, config, &rendered).await,
            Via::InApp => self.leave_in_app(job, &rendered).await,
            Via::Sms(config) => {
                let callback = format!("{base}/hooks/{workspace_id}/twilio/status");
                // WhatsApp goes through the same Messages API, both numbers written `whatsapp:+E164`.
                let to = if d.channel == "whatsapp" { format!("whatsapp:{}", d.address) } else { d.address.clone() };
                let request = match &rendered.content {
                    Some(content) => {
                        twilio::content_request(config, &to, &content.sid, &content.variables, Some(&callback))
                    }
                    None => twilio::message_request(config, &to, &rendered.text, Some(&callback)),
                };
                self.send_to_twilio(&request, false).await
            }
            // The call rings; when it is answered, Twilio fetches the call's hook, which opens the
            // conversation with the script's bot (see `call_script`).
            Via::Call(config) => {
                let url = format!("{base}/hooks/{workspace_id}/twilio/call/{}", d.id);
                let request = twilio::call_request(config, &d.address, &url, &format!("{url}/status"));
                self.send_to_twilio(&request, true).await
            }
        }
    }

    /// The template a delivery renders: its stored one, or the one it carries (a call placed
    /// through the API). `NotFound` when it has neither.
    async fn delivery_template(
        &self,
        workspace_id: &str,
        d: &NewDelivery,
    ) -> Result<Arc<CompiledTemplate>, EngageError> {
        match (&d.template_id, inline_template(d)) {
            (Some(template_id), _) => self.template(workspace_id, template_id).await,
            (None, Some(source)) => {
                Ok(Arc::new(template::compile(&source).map_err(|err| invalid(&err.field, err.message))?))
            }
            (None, None) => Err(EngageError::NotFound(format!("the template of delivery {}", d.id))),
        }
    }

    /// One request to Twilio's REST API (a message or a `call`) and what its answer means.
    async fn send_to_twilio(&self, request: &twilio::MessageRequest, call: bool) -> Result<Sent, Outcome> {
        match self.post_to_twilio(request).await {
            Ok(response) => twilio::classify_message_response(response.status, &response.body, response.retry_after)
                .map(|receipt| Sent { provider_id: receipt.provider_id })
                .map_err(Outcome::from),
            // Never connected: nothing was placed, so trying again sends or rings nobody twice.
            Err(err @ crossline_engine::EgressError::Connect(_)) => {
                Err(Outcome::Unavailable(format!("Twilio cannot be reached: {err}")))
            }
            // Sent but unanswered: Twilio may have placed the call; ringing again could reach the
            // customer twice, so a call is not retried.
            Err(err) if call => {
                Err(Outcome::Failed(format!("the call may not have been placed ({err}); not retried"), None))
            }
            Err(err) if err.is_retryable() => Err(Outcome::Retry(err.to_string(), None)),
            Err(err) => Err(Outcome::Misconfigured(err.to_string())),
        }
    }

    /// Places one call the bot answers (`POST /api/v1/calls`): a delivery on the `voice` channel
    /// for the number's profile (made when the number is new), sent through the send policy like a
    /// campaign's — voice consent always, quiet hours and caps when `kind` is marketing. Returns the
    /// delivery id. The script is checked here; the caller checks the bot and intent exist.
    pub async fn place_call(&self, workspace_id: &str, call: &CallRequest) -> Result<String, EngageError> {
        let source = call.template_source();
        template::compile(&source).map_err(|err| invalid(&err.field, err.message))?;
        let now = Utc::now();
        let identity = Identity { kind: IdentityKind::Phone, value: call.to.clone() };
        let requested = crossline_engine::conversations::event(
            &identity,
            "call.requested",
            "voice",
            json!({"bot": call.bot, "intent": call.intent}),
            now,
        );
        self.recorder
            .record(workspace_id, vec![requested])
            .await
            .map_err(|err| EngageError::Invalid { field: "to".into(), message: err.to_string() })?;
        let profile = self
            .store
            .lookup(workspace_id, &identity)
            .await?
            .ok_or_else(|| EngageError::NotFound(format!("the profile of {}", call.to)))?;
        // Unguessable: the id names the call's hook and its unsubscribe link.
        let id = crossline_core::ids::new_sortable_secret_id("dlv");
        let row = NewDelivery {
            id: id.clone(),
            idempotency_key: format!("call:{id}"),
            campaign_id: None,
            run_id: None,
            profile_id: profile.id,
            treatment: "A".into(),
            channel: "voice".into(),
            address: call.to.clone(),
            template_id: None,
            kind: call.kind.as_str().to_owned(),
            status: DeliveryStatus::Queued,
            reason: None,
            deferred: false,
            run_at: now,
            event: Some(json!({INLINE_TEMPLATE: source})),
            time_zone: None,
        };
        self.store.insert_deliveries(workspace_id, &[row]).await?;
        Ok(id)
    }

    /// Where a message of people to a customer by SMS or WhatsApp would go: the profile's phone,
    /// when the send policy lets a transactional message through now — else why not (the customer
    /// opted out of the channel, has no number or an unreachable one). Asked before the agent's
    /// message is stored, so the agent is told at once.
    pub async fn agent_reply_address(
        &self,
        workspace_id: &str,
        profile_id: &str,
        channel: &str,
    ) -> Result<Result<String, Suppression>, EngageError> {
        if !matches!(channel, "sms" | "whatsapp") {
            return Err(invalid("channel", format!("agent replies go by sms or whatsapp here, not {channel}")));
        }
        let profile = self
            .store
            .profile(workspace_id, profile_id)
            .await?
            .ok_or_else(|| EngageError::NotFound(format!("profile {profile_id}")))?;
        let address = profile
            .identities
            .iter()
            .find(|identity| identity.kind == IdentityKind::Phone)
            .map(|identity| identity.value.clone());
        let states = self.store.address_states(workspace_id, &profile.id).await?;
        let unreachable = address.as_ref().is_some_and(|address| {
            states.iter().any(|state| &state.value == address && state.kind.as_str() == channel)
        });
        let recipient = Recipient {
            consent: consent_of(&profile, channel),
            has_address: address.is_some(),
            unreachable,
            time_zone: chrono_tz::UTC,
            recent_marketing_sends: 0,
        };
        let settings = MessagingSettings::default();
        match (policy::decide(&settings, SendKind::Transactional, &recipient, Utc::now()), address) {
            (Decision::Suppress(reason), _) => Ok(Err(reason)),
            (_, Some(address)) => Ok(Ok(address)),
            (_, None) => Ok(Err(Suppression::Unreachable)),
        }
    }

    /// Queue a message of people to `address` (from [`Engage::agent_reply_address`]) as a
    /// transactional delivery: sent once, retried like any other, the policy asked again when it
    /// goes. `key` names the message: the same key is one delivery. Returns the delivery id.
    pub async fn queue_agent_reply(
        &self,
        workspace_id: &str,
        profile_id: &str,
        channel: &str,
        address: &str,
        text: &str,
        key: &str,
    ) -> Result<String, EngageError> {
        let row = self.agent_reply_delivery(profile_id, channel, address, text, key)?;
        self.store.insert_deliveries(workspace_id, std::slice::from_ref(&row)).await?;
        Ok(row.id)
    }

    /// The delivery of a message of people to `address`, for the caller to store — with the
    /// message, in one transaction ([`crossline_store::agents::PeopleChange::delivery`]).
    pub fn agent_reply_delivery(
        &self,
        profile_id: &str,
        channel: &str,
        address: &str,
        text: &str,
        key: &str,
    ) -> Result<NewDelivery, EngageError> {
        let source =
            TemplateSource { channel: channel.to_owned(), body: template::literal(text), ..TemplateSource::default() };
        template::compile(&source).map_err(|err| invalid("text", err.message))?;
        Ok(NewDelivery {
            id: crossline_core::ids::new_sortable_secret_id("dlv"),
            idempotency_key: format!("agent:{key}"),
            campaign_id: None,
            run_id: None,
            profile_id: profile_id.to_owned(),
            treatment: "A".into(),
            channel: channel.to_owned(),
            address: address.to_owned(),
            template_id: None,
            kind: SendKind::Transactional.as_str().to_owned(),
            status: DeliveryStatus::Queued,
            reason: None,
            deferred: false,
            run_at: Utc::now(),
            event: Some(json!({INLINE_TEMPLATE: source})),
            time_zone: None,
        })
    }

    /// What a placed call says and does once answered, for its delivery: the greeting, bot,
    /// intent and slots rendered for the callee as they are now. `NotFound` for a delivery that is
    /// not a call.
    pub async fn call_script(&self, workspace_id: &str, delivery_id: &str) -> Result<CallScript, EngageError> {
        let not_found = || EngageError::NotFound(format!("call {delivery_id}"));
        let delivery = self.store.delivery(workspace_id, delivery_id).await?.ok_or_else(not_found)?;
        let d = &delivery.new;
        if d.channel != "voice" {
            return Err(not_found());
        }
        let template = self.delivery_template(workspace_id, d).await?;
        let profile = self.store.profile(workspace_id, &d.profile_id).await?.ok_or_else(not_found)?;
        let workspace_zone =
            self.store.workspace(workspace_id).await?.map(|w| w.time_zone).unwrap_or_else(|| "UTC".into());
        let zone = policy::customer_time_zone(
            profile.traits.get("timezone").and_then(Value::as_str),
            d.time_zone.as_deref(),
            &workspace_zone,
        );
        let base = self.config.public_url.trim_end_matches('/');
        let unsubscribe_url = format!("{base}/u/{workspace_id}/{}", d.id);
        let profile_json = json!({"id": profile.id, "traits": profile.traits});
        let context = RenderContext {
            profile: &profile_json,
            event: d.event.as_ref(),
            unsubscribe_url: &unsubscribe_url,
            time_zone: zone,
        };
        let rendered = template.render(&context).map_err(|err| invalid(&err.field, err.message))?;
        let call = rendered.call.ok_or_else(not_found)?;
        Ok(CallScript { delivery, greeting: rendered.text.trim().to_owned(), call })
    }

    /// One Web Push message (RFC 8030): the JSON payload encrypted for the subscription, posted
    /// with the workspace's VAPID header, a `TTL` and an `Urgency`.
    async fn send_web_push(
        &self,
        job: &SendJob,
        key: &VapidKey,
        subscription: &Subscription,
        rendered: &template::Rendered,
    ) -> Result<Sent, Outcome> {
        let d = &job.delivery.new;
        let Some(push) = &rendered.push else {
            return Err(Outcome::Failed("the template is not a push template".into(), None));
        };
        let mut payload = json!({"title": push.title, "body": rendered.text, "delivery_id": d.id});
        if let Some(url) = &push.url {
            payload["url"] = json!(url);
        }
        if let Some(icon) = &push.icon {
            payload["icon"] = json!(icon);
        }
        if let Some(data) = &push.data {
            payload["data"] = data.clone();
        }
        let plaintext = serde_json::to_vec(&payload).unwrap_or_default();
        let body = webpush::encrypt(subscription, &plaintext).map_err(|err| Outcome::Failed(err.to_string(), None))?;
        let authorization = self
            .vapid_header(&job.workspace_id, key, &subscription.endpoint)
            .map_err(|err| Outcome::Failed(err.to_string(), None))?;
        // Marketing can wait for the device to be on a charger; a transactional message cannot.
        let urgency = if d.kind == SendKind::Transactional.as_str() { "high" } else { "normal" };
        let headers = [
            ("authorization", authorization),
            ("content-encoding", "aes128gcm".to_owned()),
            ("ttl", WEB_PUSH_TTL_SECONDS.to_string()),
            ("urgency", urgency.to_owned()),
        ];
        let response = self
            .egress
            .post_bytes(subscription.endpoint.as_str(), &headers, "application/octet-stream", body, PROVIDER_TIMEOUT)
            .await;
        match response {
            Ok(response) => webpush::classify_response(response.status, &response.body, response.retry_after)
                .map(|()| Sent { provider_id: None })
                .map_err(Outcome::from),
            // The endpoint is a URL a visitor gave: a host that does not answer is that
            // subscription's problem, never the campaign's (it must not pause it).
            Err(err) if err.is_retryable() => Err(Outcome::AddressRetry(format!("the push service: {err}"))),
            // A refused address or an oversized answer is this subscription's problem too.
            Err(err) => Err(Outcome::Failed(err.to_string(), None)),
        }
    }

    /// One FCM message to the delivery's device token: the notification and, as string data, the
    /// template's `data`, `url` and the delivery id.
    async fn send_fcm(
        &self,
        job: &SendJob,
        config: &FcmConfig,
        rendered: &template::Rendered,
    ) -> Result<Sent, Outcome> {
        let d = &job.delivery.new;
        let Some(push) = &rendered.push else {
            return Err(Outcome::Failed("the template is not a push template".into(), None));
        };
        let data = push_data(push, &d.id);
        let body = fcm::message_body(&d.address, &push.title, &rendered.text, push.icon.as_deref(), &data);
        let token = self.fcm_access_token(&job.workspace_id, config).await?;
        let headers = [("authorization", format!("Bearer {token}"))];
        let response =
            self.egress.post_json(&config.send_url(), &headers, body.to_string().into_bytes(), PROVIDER_TIMEOUT).await;
        match response {
            Ok(response) => {
                let outcome = fcm::classify_send_response(response.status, &response.body, response.retry_after);
                if response.status == 401 {
                    // The token was revoked or expired early: the next send asks for another.
                    self.fcm_tokens.lock().expect("fcm tokens").remove(&job.workspace_id);
                }
                outcome.map(|provider_id| Sent { provider_id }).map_err(Outcome::from)
            }
            Err(err @ crossline_engine::EgressError::Connect(_)) => {
                Err(Outcome::Unavailable(format!("FCM cannot be reached: {err}")))
            }
            Err(err) if err.is_retryable() => Err(Outcome::Retry(err.to_string(), None)),
            Err(err) => Err(Outcome::Misconfigured(format!("FCM: {err}"))),
        }
    }

    /// The workspace's FCM access token: kept until 5 minutes before it expires, asked for once
    /// when many sends need it at the same moment.
    async fn fcm_access_token(&self, workspace_id: &str, config: &FcmConfig) -> Result<String, Outcome> {
        let account = format!("{} {}", config.client_email, config.token_uri);
        let cached = || {
            let tokens = self.fcm_tokens.lock().expect("fcm tokens");
            tokens
                .get(workspace_id)
                .filter(|(issued_to, _, renew)| *issued_to == account && *renew > std::time::Instant::now())
                .map(|(_, token, _)| token.clone())
        };
        if let Some(token) = cached() {
            return Ok(token);
        }
        let turn = {
            let mut turns = self.fcm_token_refresh.lock().expect("fcm token turns");
            if turns.len() > 4096 {
                turns.clear();
            }
            turns.entry(workspace_id.to_owned()).or_default().clone()
        };
        let mut last_failure = turn.lock().await;
        if let Some(token) = cached() {
            return Ok(token);
        }
        if let Some((outcome, until)) = last_failure.as_ref()
            && *until > std::time::Instant::now()
        {
            return Err(outcome.clone());
        }
        let fetched = self.fetch_fcm_token(config).await;
        match fetched {
            Ok((token, lifetime)) => {
                *last_failure = None;
                // At most an hour, whatever the endpoint says (a huge `expires_in` must not overflow).
                let lifetime = std::time::Duration::from_secs(lifetime.clamp(360, 3600) - 300);
                let mut tokens = self.fcm_tokens.lock().expect("fcm tokens");
                if tokens.len() > 4096 {
                    tokens.clear();
                }
                tokens.insert(workspace_id.to_owned(), (account, token.clone(), std::time::Instant::now() + lifetime));
                Ok(token)
            }
            Err(outcome) => {
                *last_failure = Some((outcome.clone(), std::time::Instant::now() + std::time::Duration::from_secs(30)));
                Err(outcome)
            }
        }
    }

    /// Trades a freshly signed assertion for an access token: (token, lifetime in seconds).
    async fn fetch_fcm_token(&self, config: &FcmConfig) -> Result<(String, u64), Outcome> {
        let key = config.key().map_err(|err| Outcome::Misconfigured(format!("FCM: {err}")))?;
        let assertion = fcm::assertion(config, &key, Utc::now().timestamp()).map_err(Outcome::from)?;
        let response = self
            .egress
            .post_form(&config.token_uri, &[], &fcm::token_form(&assertion), PROVIDER_TIMEOUT)
            .await
            .map_err(|err| match err {
                crossline_engine::EgressError::Connect(_) => {
                    Outcome::Unavailable(format!("FCM's token endpoint cannot be reached: {err}"))
                }
                err if err.is_retryable() => Outcome::Retry(err.to_string(), None),
                err => Outcome::Misconfigured(format!("FCM's token endpoint: {err}")),
            })?;
        fcm::parse_token_response(response.status, &response.body).map_err(Outcome::from)
    }

    /// A sending channel's stored configuration (`twilio`, `fcm`, `apns`, `webhook`).
    async fn channel_config<T: serde::de::DeserializeOwned>(
        &self,
        workspace_id: &str,
        kind: &str,
        name: &str,
    ) -> Result<T, Outcome> {
        match self.store.channel(workspace_id, kind).await {
            Ok(Some(raw)) => serde_json::from_value(raw).map_err(|err| Outcome::Misconfigured(err.to_string())),
            Ok(None) => Err(Outcome::Misconfigured(format!("{name} is not configured (PUT /api/v1/channels/{kind})"))),
            Err(err) => Err(Outcome::Retry(err.to_string(), None)),
        }
    }

    /// Leaves the in-app message on the recipient's profile for its app or the widget to fetch; sent
    /// once stored (a retry leaves nothing twice).
    async fn leave_in_app(&self, job: &SendJob, rendered: &template::Rendered) -> Result<Sent, Outcome> {
        let d = &job.delivery.new;
        let Some(content) = crate::in_app::pinpoint_message(rendered) else {
            return Err(Outcome::Failed("the template is not an in-app template".into(), None));
        };
        let now = Utc::now();
        let message = crossline_store::engage::InAppMessage {
            delivery_id: d.id.clone(),
            profile_id: job.profile["id"].as_str().unwrap_or(&d.profile_id).to_owned(),
            campaign_id: d.campaign_id.clone(),
            content,
            priority: i64::from(d.kind == SendKind::Transactional.as_str()),
            created_at: now,
            expires_at: now + Duration::days(crate::in_app::IN_APP_LIFETIME_DAYS),
        };
        match self.store.put_in_app_message(&job.workspace_id, &message).await {
            Ok(()) => Ok(Sent { provider_id: None }),
            Err(err) => Err(Outcome::Retry(err.to_string(), None)),
        }
    }

    /// The in-app messages waiting for a profile, as Pinpoint's `GetInAppMessages` answers.
    pub async fn in_app_messages(&self, workspace_id: &str, profile_id: &str) -> Result<Value, EngageError> {
        // A customer who opted out since the message was left sees it no more.
        let profile = self.store.profile(workspace_id, profile_id).await?;
        if profile.is_none_or(|profile| consent_of(&profile, "in_app") == ConsentStatus::Unsubscribed) {
            return Ok(crate::in_app::get_in_app_messages(&[]));
        }
        let messages = self
            .store
            .in_app_messages(workspace_id, profile_id, Utc::now(), crossline_store::engage::MAX_IN_APP_FETCH)
            .await?;
        Ok(crate::in_app::get_in_app_messages(&messages))
    }

    /// What the customer did with one of their in-app messages: displayed counts as the delivery's
    /// open, clicked as its click; clicked and dismissed stop it being shown. `NotFound` when the
    /// profile holds no such message waiting (someone else's, or dismissed already).
    pub async fn in_app_event(
        &self,
        workspace_id: &str,
        profile_id: &str,
        delivery_id: &str,
        event: crate::in_app::InAppEvent,
    ) -> Result<(), EngageError> {
        use crate::in_app::InAppEvent;
        let now = Utc::now();
        let waiting = self
            .store
            .in_app_messages(workspace_id, profile_id, now, crossline_store::engage::MAX_IN_APP_FETCH)
            .await?;
        if !waiting.iter().any(|message| message.delivery_id == delivery_id) {
            return Err(EngageError::NotFound(format!("in-app message {delivery_id}")));
        }
        match event {
            InAppEvent::Displayed => {
                self.engaged(workspace_id, delivery_id, crossline_store::engage::Engagement::Opened, None, now).await?;
            }
            InAppEvent::Clicked | InAppEvent::Dismissed => {
                if !self.store.dismiss_in_app_message(workspace_id, profile_id, delivery_id, now).await? {
                    return Err(EngageError::NotFound(format!("in-app message {delivery_id}")));
                }
                if event == InAppEvent::Clicked {
                    let engagement = crossline_store::engage::Engagement::Clicked;
                    self.engaged(workspace_id, delivery_id, engagement, None, now).await?;
                } else if let Some(delivery) = self.store.delivery(workspace_id, delivery_id).await? {
                    self.record(workspace_id, &delivery.new, "delivery.dismissed", json!({}), now).await;
                }
            }
        }
        Ok(())
    }

    /// One signed call to the workspace's webhook for the delivery's recipient (Standard Webhooks;
    /// `webhook-id` is the delivery id, the same on every retry, so the receiver can drop repeats).
    async fn send_webhook(
        &self,
        job: &SendJob,
        config: &WebhookChannelConfig,
        rendered: &template::Rendered,
    ) -> Result<Sent, Outcome> {
        let d = &job.delivery.new;
        let now = Utc::now();
        let body = json!({"type": "campaign.message", "timestamp": now.to_rfc3339(), "data": {
            "delivery_id": d.id, "campaign_id": d.campaign_id, "treatment": d.treatment, "kind": d.kind,
            "profile": job.profile, "message": rendered.text, "event": d.event}});
        let body = body.to_string().into_bytes();
        let timestamp = now.timestamp();
        let headers = [
            ("webhook-id", d.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", crossline_engine::destinations::signature(&config.secret, &d.id, timestamp, &body)),
        ];
        match self.egress.post_json(&config.url, &headers, body, PROVIDER_TIMEOUT).await {
            Ok(response) => crossline_channels::webhook::classify_response(response.status, response.retry_after)
                .map(|()| Sent { provider_id: None })
                .map_err(Outcome::from),
            Err(err @ crossline_engine::EgressError::Connect(_)) => {
                Err(Outcome::Unavailable(format!("the webhook cannot be reached: {err}")))
            }
            Err(err) if err.is_retryable() => Err(Outcome::Retry(err.to_string(), None)),
            Err(err) => Err(Outcome::Misconfigured(format!("the webhook: {err}"))),
        }
    }

    /// One APNs alert to the delivery's device token, over HTTP/2: the title and body, and beside
    /// `aps` the template's `data`, `url` and the delivery id.
    async fn send_apns(
        &self,
        job: &SendJob,
        config: &ApnsConfig,
        rendered: &template::Rendered,
    ) -> Result<Sent, Outcome> {
        let d = &job.delivery.new;
        let Some(push) = &rendered.push else {
            return Err(Outcome::Failed("the template is not a push template".into(), None));
        };
        if !apns::is_device_token(&d.address) {
            return Err(Outcome::Failed("not an APNs device token (64 hexadecimal digits)".into(), None));
        }
        let data = push_data(push, &d.id);
        let body = apns::payload(&push.title, &rendered.text, &data).to_string();
        if body.len() > apns::MAX_PAYLOAD_BYTES {
            return Err(Outcome::Failed(
                format!("the payload is {} bytes; APNs takes {}", body.len(), apns::MAX_PAYLOAD_BYTES),
                None,
            ));
        }
        let token = self.apns_provider_token(&job.workspace_id, config)?;
        let urgent = d.kind == SendKind::Transactional.as_str();
        let expires = Utc::now().timestamp() + i64::from(WEB_PUSH_TTL_SECONDS);
        let headers = apns::headers(config, &token, urgent, expires);
        let response = self
            .egress
            .post_json_http2(&config.device_url(&d.address), &headers, body.into_bytes(), PROVIDER_TIMEOUT)
            .await;
        match response {
            Ok(response) => {
                let outcome = apns::classify_response(response.status, &response.body, response.retry_after);
                if response.status == 403 {
                    // A provider token APNs no longer takes: the next send signs another.
                    self.apns_tokens.lock().expect("apns tokens").remove(&job.workspace_id);
                }
                outcome.map(|()| Sent { provider_id: None }).map_err(Outcome::from)
            }
            Err(err @ crossline_engine::EgressError::Connect(_)) => {
                Err(Outcome::Unavailable(format!("APNs cannot be reached: {err}")))
            }
            Err(err) if err.is_retryable() => Err(Outcome::Retry(err.to_string(), None)),
            Err(err) => Err(Outcome::Misconfigured(format!("APNs: {err}"))),
        }
    }

    /// The workspace's APNs provider token, signed again every 50 minutes (APNs refuses tokens
    /// renewed more often than every 20 or older than 60).
    fn apns_provider_token(&self, workspace_id: &str, config: &ApnsConfig) -> Result<String, Outcome> {
        let signer = format!("{} {} {}", config.team_id, config.key_id, config.api_base_url);
        let mut tokens = self.apns_tokens.lock().expect("apns tokens");
        if let Some((signed_by, token, renew)) = tokens.get(workspace_id)
            && *signed_by == signer
            && *renew > std::time::Instant::now()
        {
            return Ok(token.clone());
        }
        let key = config.key().map_err(|err| Outcome::Misconfigured(format!("APNs: {err}")))?;
        let token = apns::provider_token(config, &key, Utc::now().timestamp()).map_err(Outcome::from)?;
        if tokens.len() > 4096 {
            tokens.clear();
        }
        let renew = std::time::Instant::now() + std::time::Duration::from_secs(apns::TOKEN_LIFETIME_SECONDS);
        tokens.insert(workspace_id.to_owned(), (signer, token.clone(), renew));
        Ok(token)
    }

    /// The VAPID `Authorization` header for a push service's origin, signed again when less than
    /// an hour of its 12 is left.
    fn vapid_header(
        &self,
        workspace_id: &str,
        key: &VapidKey,
        endpoint: &url::Url,
    ) -> Result<String, webpush::WebPushError> {
        let now = Utc::now().timestamp();
        let cache_key = (workspace_id.to_owned(), endpoint.origin().ascii_serialization());
        if let Some((header, expires)) = self.vapid_headers.lock().expect("vapid headers").get(&cache_key)
            && *expires - now > 3600
        {
            return Ok(header.clone());
        }
        let header = key.authorization(endpoint, &self.vapid_subject(), now)?;
        let mut cache = self.vapid_headers.lock().expect("vapid headers");
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(cache_key, (header.clone(), now + webpush::VAPID_LIFETIME_SECONDS));
        Ok(header)
    }

    /// Who push services may contact about our messages (the VAPID `sub`): the public URL when it
    /// is https, else a `mailto:` at its host.
    fn vapid_subject(&self) -> String {
        let public = self.config.public_url.trim_end_matches('/');
        if public.starts_with("https://") {
            return public.to_owned();
        }
        let host = url::Url::parse(public).ok().and_then(|url| url.host_str().map(str::to_owned));
        format!("mailto:push@{}", host.unwrap_or_else(|| "localhost".into()))
    }

    /// Sends one message of a stored template to an address its author chose: a test. It is no
    /// delivery (no stats, no tracking, no consent check — the author is the recipient), the
    /// subject starts with `[Test]`, and it is rendered for `profile` (`{"id", "traits"}`). Returns
    /// the provider's id. A channel that is not configured or a provider that refuses is a
    /// conflict naming why; an address the provider calls invalid is an invalid `to`.
    pub async fn test_send(
        &self,
        workspace_id: &str,
        template_id: &str,
        to: &str,
        profile: &Value,
        time_zone: chrono_tz::Tz,
    ) -> Result<Option<String>, EngageError> {
        let compiled = self.template(workspace_id, template_id).await?;
        let id = crossline_core::ids::new_id("test");
        // A test has no delivery, so its unsubscribe link leads to "no longer valid".
        let unsubscribe_url = format!("{}/u/{workspace_id}/{id}", self.config.public_url.trim_end_matches('/'));
        let context = RenderContext { profile, event: None, unsubscribe_url: &unsubscribe_url, time_zone };
        let rendered = compiled.render(&context).map_err(|err| invalid("template", err.to_string()))?;
        let refused = |outcome: Outcome| match outcome {
            Outcome::Bounced(message, _) | Outcome::Failed(message, _) => invalid("to", message),
            Outcome::Misconfigured(message)
            | Outcome::Unavailable(message)
            | Outcome::Retry(message, _)
            | Outcome::AddressRetry(message)
            | Outcome::Released(message, _) => EngageError::Conflict(format!("the test was not sent: {message}")),
            Outcome::Suppressed(_) | Outcome::Deferred(_) => EngageError::Conflict("the test was not sent".into()),
        };
        match compiled.channel() {
            "email" => {
                let sender = self.email_sender(workspace_id).await.map_err(refused)?;
                let subject = format!("[Test] {}", rendered.subject.as_deref().unwrap_or_default());
                let message_id = format!("{id}@crossline");
                let email = Email {
                    to,
                    subject: &subject,
                    html: rendered.html.as_deref(),
                    text: &rendered.text,
                    message_id: &message_id,
                    unsubscribe_url: None,
                    headers: &[],
                };
                sender.send(&email).await.map(|receipt| receipt.provider_id).map_err(|err| refused(err.into()))
            }
            "sms" => {
                let config = self.twilio(workspace_id).await.map_err(refused)?;
                let request = twilio::message_request(&config, to, &rendered.text, None);
                let response = self
                    .post_to_twilio(&request)
                    .await
                    .map_err(|err| EngageError::Conflict(format!("the test was not sent: Twilio: {err}")))?;
                twilio::classify_message_response(response.status, &response.body, response.retry_after)
                    .map(|receipt| receipt.provider_id)
                    .map_err(|err| refused(err.into()))
            }
            other => Err(invalid("template", format!("test sends of {other} templates are not supported yet"))),
        }
    }

    /// One request to Twilio's Messages API, through the egress rules.
    async fn post_to_twilio(
        &self,
        request: &twilio::MessageRequest,
    ) -> Result<crossline_engine::egress::EgressResponse, crossline_engine::EgressError> {
        let authorization = [("authorization", request.authorization.clone())];
        self.egress.post_form(&request.url, &authorization, &request.form, std::time::Duration::from_secs(15)).await
    }

    /// A per-workspace secret kept in the store under `name` as `{field: HEX}`: read, or made by
    /// `make` on first use — once across nodes ([`crossline_store::ChannelStore::init_channel`]) and
    /// only for a workspace that exists (a made-up id in a public link must not create rows).
    async fn workspace_secret(
        &self,
        workspace_id: &str,
        name: &str,
        field: &str,
        make: impl FnOnce() -> Result<Vec<u8>, EngageError>,
    ) -> Result<Vec<u8>, EngageError> {
        if self.store.workspace(workspace_id).await?.is_none() {
            return Err(EngageError::NotFound(format!("workspace {workspace_id} does not exist")));
        }
        let stored = match self.store.channel(workspace_id, name).await? {
            Some(stored) => stored,
            None => self.store.init_channel(workspace_id, name, &json!({field: hex::encode(make()?)})).await?,
        };
        stored.get(field).and_then(Value::as_str).and_then(|text| hex::decode(text).ok()).ok_or_else(|| {
            EngageError::Store(StoreError::Backend(format!("{name} of {workspace_id} is not stored as hex")))
        })
    }

    /// The workspace's key for signing tracked links (made on first use, kept in the store so
    /// every node and every restart signs alike).
    pub async fn link_key(&self, workspace_id: &str) -> Result<Vec<u8>, EngageError> {
        if let Some(key) = self.link_keys.lock().expect("link keys").get(workspace_id) {
            return Ok(key.clone());
        }
        let key =
            self.workspace_secret(workspace_id, LINK_KEY, "key", || Ok(rand::random::<[u8; 32]>().to_vec())).await?;
        if key.len() != 32 {
            return Err(EngageError::Store(StoreError::Backend(format!(
                "the link key of {workspace_id} is not 32 bytes"
            ))));
        }
        self.link_keys.lock().expect("link keys").insert(workspace_id.to_owned(), key.clone());
        Ok(key)
    }

    /// Registers a push address for a profile: a browser's `PushSubscription` or an app's device
    /// token (see [`crate::push::parse`]); a web endpoint must also pass the egress rules (a name
    /// resolving to a private address is refused unless private egress is allowed). Returns it and
    /// whether it was new to the profile; `NotFound` for an unknown profile.
    pub async fn register_push(
        &self,
        workspace_id: &str,
        profile_id: &str,
        body: &Value,
    ) -> Result<(crossline_store::engage::PushAddress, bool), EngageError> {
        let allow_private = self.egress.rules().allow_private;
        let address = crate::push::parse(body, allow_private, Utc::now())
            .map_err(|refused| invalid(&refused.field, refused.message))?;
        if address.kind == "webpush" {
            let url =
                self.egress.check_url(&address.value).await.map_err(|err| invalid("endpoint", err.to_string()))?;
            // A name that does not resolve could never take a message (a made-up subdomain of a
            // push service): refused now rather than retried at every send.
            if !allow_private
                && let Some(host) = url.host_str()
                && tokio::net::lookup_host((host, 443)).await.map(|mut found| found.next().is_none()).unwrap_or(true)
            {
                return Err(invalid("endpoint", format!("{host} does not resolve")));
            }
        }
        match self.store.put_push_address(workspace_id, profile_id, &address).await? {
            Some(new) => Ok((address, new)),
            None => Err(EngageError::NotFound(format!("profile {profile_id} does not exist"))),
        }
    }

    /// The workspace's VAPID key for Web Push: made on first use (once across nodes) and kept in
    /// the store (PKCS#8, never shown); browsers subscribe with its public part.
    pub async fn vapid_key(
        &self,
        workspace_id: &str,
    ) -> Result<Arc<crossline_channels::webpush::VapidKey>, EngageError> {
        use crossline_channels::webpush::VapidKey;
        if let Some(key) = self.vapid_keys.lock().expect("vapid keys").get(workspace_id) {
            return Ok(key.clone());
        }
        let broken =
            |why: String| EngageError::Store(StoreError::Backend(format!("the VAPID key of {workspace_id}: {why}")));
        let make = || VapidKey::generate().map(|made| made.pkcs8().to_vec()).map_err(|err| broken(err.to_string()));
        let pkcs8 = self.workspace_secret(workspace_id, VAPID_KEY, "pkcs8", make).await?;
        let key = Arc::new(VapidKey::from_pkcs8(&pkcs8).map_err(|err| broken(err.to_string()))?);
        self.vapid_keys.lock().expect("vapid keys").insert(workspace_id.to_owned(), key.clone());
        Ok(key)
    }

    /// Whether a tracked link's signature is this workspace's for this delivery and URL.
    pub async fn verify_link(
        &self,
        workspace_id: &str,
        delivery_id: &str,
        url: &str,
        signature: &str,
    ) -> Result<bool, EngageError> {
        let key = self.link_key(workspace_id).await?;
        let expected = link_signature(&key, delivery_id, url);
        // Equal length hex strings compared without an early exit.
        Ok(expected.len() == signature.len()
            && expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
    }

    /// Records an open or a click of a delivery: the first of each counts in the stats and becomes
    /// an event on the recipient's profile. Whether the delivery exists.
    pub async fn engaged(
        &self,
        workspace_id: &str,
        delivery_id: &str,
        engagement: crossline_store::engage::Engagement,
        url: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, EngageError> {
        let Some(delivery) = self.store.delivery(workspace_id, delivery_id).await? else { return Ok(false) };
        if self.store.record_engagement(workspace_id, delivery_id, engagement, now).await? {
            let name = format!("delivery.{}", engagement.as_str());
            let properties = match url {
                Some(url) => json!({"url": url}),
                None => json!({}),
            };
            self.record(workspace_id, &delivery.new, &name, properties, now).await;
        }
        Ok(true)
    }

    async fn email_sender(&self, workspace_id: &str) -> Result<Arc<EmailSender>, Outcome> {
        let raw = match self.store.channel(workspace_id, "smtp").await {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                return Err(Outcome::Misconfigured("email is not configured (PUT /api/v1/channels/smtp)".into()));
            }
            Err(err) => return Err(Outcome::Retry(err.to_string(), None)),
        };
        if let Some((seen, sender)) = self.email.lock().expect("email senders").get(workspace_id)
            && *seen == raw
        {
            return Ok(sender.clone());
        }
        let config: EmailConfig =
            serde_json::from_value(raw.clone()).map_err(|err| Outcome::Misconfigured(err.to_string()))?;
        let mut sender = EmailSender::new(&config).map_err(Outcome::from)?;
        if !self.egress.rules().allow_private {
            sender = sender.refusing(crossline_engine::egress::is_refused);
        }
        let sender = Arc::new(sender);
        self.email.lock().expect("email senders").insert(workspace_id.to_owned(), (raw, sender.clone()));
        Ok(sender)
    }

    async fn twilio(&self, workspace_id: &str) -> Result<TwilioConfig, Outcome> {
        self.channel_config(workspace_id, "twilio", "Twilio").await
    }

    /// Turns a send's outcome into the delivery's update, marking unreachable addresses,
    /// recording bounces and pausing a campaign whose channel is broken.
    async fn settle(
        &self,
        workspace_id: &str,
        delivery: &Delivery,
        outcome: Result<Sent, Outcome>,
        now: DateTime<Utc>,
    ) -> DeliveryUpdate {
        let d = &delivery.new;
        let mut update = DeliveryUpdate {
            id: d.id.clone(),
            status: DeliveryStatus::Sent,
            reason: None,
            error_code: None,
            provider_id: None,
            run_at: None,
            sent_at: None,
            not_attempted: false,
        };
        let campaign = d.campaign_id.clone().unwrap_or_default();
        match outcome {
            Ok(sent) => {
                let mut failures = self.failures.lock().expect("failures");
                failures.remove(&campaign);
                failures.remove(&format!("{campaign}\u{0}down"));
                drop(failures);
                update.provider_id = sent.provider_id;
                update.sent_at = Some(now);
            }
            Err(Outcome::Suppressed(reason)) => {
                update.status = DeliveryStatus::Suppressed;
                update.reason = Some(reason.as_str().into());
            }
            Err(Outcome::Released(reason, delay)) => return released(d.id.clone(), &reason, now + delay),
            Err(Outcome::Deferred(until)) => {
                update.status = DeliveryStatus::Queued;
                update.reason = Some("quiet hours".into());
                update.run_at = Some(until);
                update.not_attempted = true;
            }
            Err(Outcome::Retry(message, retry_after)) => {
                let failures = {
                    let mut failures = self.failures.lock().expect("failures");
                    let count = failures.entry(campaign.clone()).or_default();
                    *count += 1;
                    *count
                };
                if failures >= self.config.pause_after_failures && !campaign.is_empty() {
                    self.pause(workspace_id, &campaign, &format!("the channel keeps failing: {message}")).await;
                }
                if delivery.attempts >= self.config.max_attempts {
                    update.status = DeliveryStatus::Failed;
                    update.reason = Some(format!("gave up after {} attempts: {message}", delivery.attempts));
                } else {
                    update.status = DeliveryStatus::Queued;
                    update.reason = Some(message);
                    let wait = retry_after
                        .map(|d| Duration::from_std(d).unwrap_or(Duration::days(1)).min(Duration::days(1)))
                        .unwrap_or_else(|| backoff(delivery.attempts));
                    update.run_at = Some(now.checked_add_signed(wait).unwrap_or(now));
                }
            }
            Err(Outcome::AddressRetry(message)) => {
                if delivery.attempts >= self.config.max_attempts {
                    update.status = DeliveryStatus::Failed;
                    update.reason = Some(format!("gave up after {} attempts: {message}", delivery.attempts));
                    if let Some(kind) = address_kind_of(&d.channel, &d.address)
                        && let Err(err) =
                            self.store.set_address_unreachable(workspace_id, kind, &d.address, "no answer", now).await
                    {
                        tracing::warn!(error = %err, "could not mark an address unreachable");
                    }
                } else {
                    update.status = DeliveryStatus::Queued;
                    update.reason = Some(message);
                    update.run_at = Some(now.checked_add_signed(backoff(delivery.attempts)).unwrap_or(now));
                }
            }
            Err(Outcome::Unavailable(message)) => {
                // A few in a row and the channel is down: the campaign pauses with the reason
                // rather than spending its retries; after a resume the delivery goes out again.
                let failures = {
                    let mut failures = self.failures.lock().expect("failures");
                    let count = failures.entry(format!("{campaign}\u{0}down")).or_default();
                    *count += 1;
                    *count
                };
                if failures >= PAUSE_AFTER_UNAVAILABLE && !campaign.is_empty() {
                    self.pause(workspace_id, &campaign, &message).await;
                }
                update.status = DeliveryStatus::Queued;
                update.reason = Some(message);
                // Not a failure of this message: tried again soon, never given up on, and not
                // counted against its attempts.
                update.run_at = Some(now + Duration::seconds(5));
                update.not_attempted = true;
            }
            Err(Outcome::Misconfigured(message)) => {
                if !campaign.is_empty() {
                    self.pause(workspace_id, &campaign, &message).await;
                }
                update.status = DeliveryStatus::Queued;
                update.reason = Some(message);
                update.run_at = Some(now);
                update.not_attempted = true;
            }
            Err(Outcome::Failed(message, code)) => {
                update.status = DeliveryStatus::Failed;
                update.reason = Some(message);
                update.error_code = code;
            }
            Err(Outcome::Bounced(message, code)) => {
                update.status = DeliveryStatus::Bounced;
                update.reason = Some(message.clone());
                update.error_code = code.clone();
                if let Some(kind) = address_kind_of(&d.channel, &d.address) {
                    let reason = format!(
                        "{} {}",
                        match d.channel.as_str() {
                            "email" => "hard_bounce",
                            "push" => "unregistered",
                            _ => "invalid_number",
                        },
                        code.clone().unwrap_or_default()
                    );
                    if let Err(err) =
                        self.store.set_address_unreachable(workspace_id, kind, &d.address, reason.trim(), now).await
                    {
                        tracing::warn!(error = %err, "could not mark an address unreachable");
                    }
                    self.record(workspace_id, d, "delivery.bounced", json!({"reason": message, "code": code}), now)
                        .await;
                }
            }
        }
        update
    }

    async fn pause(&self, workspace_id: &str, campaign_id: &str, reason: &str) {
        let paused = self
            .store
            .set_object_status(
                workspace_id,
                ObjectKind::Campaign,
                campaign_id,
                campaign::status::PAUSED,
                Some(reason),
                &[campaign::status::RUNNING],
            )
            .await;
        if matches!(paused, Ok(true)) {
            tracing::warn!(workspace_id, campaign_id, reason, "campaign paused");
        }
        let mut failures = self.failures.lock().expect("failures");
        failures.remove(campaign_id);
        failures.remove(&format!("{campaign_id}\u{0}down"));
    }

    /// Records an engagement event about a delivery on its recipient's profile.
    pub async fn record(
        &self,
        workspace_id: &str,
        delivery: &NewDelivery,
        name: &str,
        properties: Value,
        now: DateTime<Utc>,
    ) {
        self.record_once(workspace_id, delivery, name, properties, now, None).await;
    }

    /// [`Engage::record`] with the event's message id: a provider's report delivered twice (a
    /// replay, a retry) is recorded once.
    pub async fn record_once(
        &self,
        workspace_id: &str,
        delivery: &NewDelivery,
        name: &str,
        mut properties: Value,
        now: DateTime<Utc>,
        message_id: Option<String>,
    ) {
        if let Value::Object(map) = &mut properties {
            map.insert("delivery_id".into(), delivery.id.clone().into());
            map.insert("campaign_id".into(), delivery.campaign_id.clone().into());
            map.insert("treatment".into(), delivery.treatment.clone().into());
            map.insert("channel".into(), delivery.channel.clone().into());
        }
        let identity = match delivery.channel.as_str() {
            "email" => Identity { kind: IdentityKind::Email, value: delivery.address.clone() },
            "sms" | "voice" | "whatsapp" => Identity { kind: IdentityKind::Phone, value: delivery.address.clone() },
            // A push address is no identity: the event goes to the recipient's profile as it is now.
            _ => match self.store.profile(workspace_id, &delivery.profile_id).await {
                Ok(Some(profile)) => match profile.identities.first() {
                    Some(identity) => identity.clone(),
                    None => return,
                },
                _ => return,
            },
        };
        let mut event = crossline_engine::conversations::event(&identity, name, &delivery.channel, properties, now);
        if let Some(message_id) = message_id {
            event.message_id = message_id;
        }
        if let Err(err) = self.recorder.record(workspace_id, vec![event]).await {
            tracing::warn!(error = %err, name, "could not record an engagement event");
        }
    }
}

/// A batch of stored events as the recorder publishes it (`events.<workspace>`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StreamBatch {
    /// The workspace.
    pub workspace_id: String,
    /// The events.
    pub events: Vec<StreamEvent>,
}

/// One published event.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StreamEvent {
    /// Its id.
    pub message_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name (track events).
    pub event: Option<String>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Its profile.
    pub profile_id: Option<String>,
}

/// The job queue of segment refreshes.
pub const REFRESH_QUEUE: &str = "segment.refresh";

/// A segment's filter resolved among a workspace's segments (references inlined, lists as
/// membership lookups); a missing segment, a cycle or an expansion past
/// [`crossline_core::segment::MAX_RESOLVED_NODES`] is an error naming it.
fn resolve_among(segments: &[EngageObject], segment_id: &str) -> Result<Filter, EngageError> {
    resolve_filter_among(segments, &Filter::Segment(segment_id.to_owned()))
}

fn resolve_filter_among(segments: &[EngageObject], filter: &Filter) -> Result<Filter, EngageError> {
    let by_id: HashMap<&str, &EngageObject> = segments.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut lookup = |id: &str| -> Option<Filter> {
        let segment = by_id.get(id)?;
        match segment.body.get("filter") {
            Some(filter) if !filter.is_null() => Filter::parse(filter).ok(),
            _ => Some(Filter::List(id.to_owned())),
        }
    };
    filter
        .resolve(&mut lookup, 0, &mut Vec::new())
        .map_err(|err| EngageError::NotFound(format!("{}: {}", err.path, err.message)))
}

/// The first channel in the campaign's order with an address the customer did not unsubscribe
/// and that is not unreachable, and the policy's decision for it.
fn choose(
    spec: &CampaignSpec,
    settings: &MessagingSettings,
    facts: &RecipientFacts,
    zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Planned {
    let profile = &facts.profile;
    let recent = if spec.kind == SendKind::Marketing { facts.marketing_sends } else { 0 };
    let mut first: Option<Planned> = None;
    for channel in &spec.channels {
        let address = address_for(facts, channel);
        let recipient = Recipient {
            consent: consent_of(profile, channel),
            has_address: address.is_some(),
            unreachable: address.as_ref().is_some_and(|address| is_unreachable(facts, channel, address)),
            time_zone: zone,
            recent_marketing_sends: recent,
        };
        let decision = policy::decide(settings, spec.kind, &recipient, now);
        let planned = Planned { channel: channel.clone(), address: address.unwrap_or_default(), decision };
        if matches!(decision, Decision::Send | Decision::Defer(_)) {
            return planned;
        }
        // The reason reported is the first channel's (an address the customer unsubscribed
        // matters more than a channel they never gave an address for).
        if first.is_none()
            || matches!(decision, Decision::Suppress(Suppression::Unsubscribed))
                && !first.as_ref().is_some_and(|f| matches!(f.decision, Decision::Suppress(Suppression::Unsubscribed)))
        {
            first = Some(planned);
        }
    }
    first.expect("a campaign has at least one channel")
}

/// Whether this address of the recipient's is known to be unreachable on this channel.
fn is_unreachable(facts: &RecipientFacts, channel: &str, address: &str) -> bool {
    facts
        .unreachable
        .iter()
        .any(|state| state.value == address && address_kind_of(channel, address) == Some(state.kind.as_str()))
}

/// Since when marketing sends count against the frequency cap, when one applies.
fn cap_since(settings: &MessagingSettings, spec: &CampaignSpec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match settings.frequency_cap {
        Some(cap) if spec.kind == SendKind::Marketing => Some(now - Duration::days(i64::from(cap.days))),
        _ => None,
    }
}

fn backoff(attempts: u32) -> Duration {
    let base = 30i64 << attempts.min(8);
    let jitter = rand::random_range(0..=base / 4);
    Duration::seconds((base + jitter).min(3600))
}

struct Sent {
    provider_id: Option<String>,
}

/// Sends in a row of one campaign that found the provider unreachable before it is paused.
const PAUSE_AFTER_UNAVAILABLE: u32 = 3;

/// A send is not started with less than this left of its claim ...
const MIN_SEND_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// ... and is abandoned this long before the claim runs out, so no other sender can take a
/// delivery while its provider call may still be going on.
const SEND_MARGIN: Duration = Duration::seconds(5);

/// A claimed delivery, decided.
enum Step {
    /// Not sent: the update that records why.
    Settled(DeliveryUpdate),
    /// To send.
    Send(Box<SendJob>),
}

/// Everything one send needs, so it runs on its own task.
struct SendJob {
    workspace_id: String,
    delivery: Delivery,
    profile: Value,
    zone: chrono_tz::Tz,
    template: Arc<CompiledTemplate>,
    via: Via,
}

/// The provider a send goes through.
enum Via {
    Email(Arc<EmailSender>, Vec<u8>),
    Sms(Arc<TwilioConfig>),
    WebPush(Arc<VapidKey>, Box<Subscription>),
    Fcm(Arc<FcmConfig>),
    Apns(Arc<ApnsConfig>),
    Webhook(Arc<WebhookChannelConfig>),
    InApp,
    Call(Arc<TwilioConfig>),
}

/// How long a push service keeps a message for a device that is offline.
const WEB_PUSH_TTL_SECONDS: u32 = 24 * 3600;

/// How long a provider may take to answer one message.
const PROVIDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// What an app's push message carries beside its title and body: the template's `data`, the page
/// (`url`) and the delivery id.
fn push_data(push: &template::RenderedPush, delivery_id: &str) -> serde_json::Map<String, Value> {
    let mut data = match &push.data {
        Some(Value::Object(data)) => data.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(url) = &push.url {
        data.insert("url".into(), json!(url));
    }
    data.insert("delivery_id".into(), json!(delivery_id));
    data
}

/// Where a push delivery goes.
enum PushTarget {
    Web(Subscription),
    Device { platform: &'static str },
}

/// The push address `address` of the recipient's, when it is still theirs.
fn push_target(facts: &RecipientFacts, address: &str) -> Option<PushTarget> {
    if let Some(registered) = facts.push.iter().find(|registered| registered.value == address) {
        return match (registered.platform.as_str(), &registered.p256dh, &registered.auth) {
            ("webpush", Some(p256dh), Some(auth)) => {
                Subscription::from_stored(&registered.value, p256dh, auth).ok().map(PushTarget::Web)
            }
            ("apns", ..) => Some(PushTarget::Device { platform: "apns" }),
            ("fcm", ..) => Some(PushTarget::Device { platform: "fcm" }),
            _ => None,
        };
    }
    let token = facts
        .profile
        .identities
        .iter()
        .find(|identity| identity.kind == IdentityKind::DeviceToken && identity.value == address)?;
    Some(PushTarget::Device { platform: device_platform(&token.value) })
}

/// The platform of a device token nobody registered with one (Segment's `context.device.token`):
/// APNs tokens are 32 bytes in hex; anything else is taken for FCM.
fn device_platform(token: &str) -> &'static str {
    if token.len() == 64 && token.bytes().all(|byte| byte.is_ascii_hexdigit()) { "apns" } else { "fcm" }
}

/// The identity or push-address kind an address of a channel is stored under.
fn address_kind_of(channel: &str, address: &str) -> Option<&'static str> {
    if channel == "push" && (address.starts_with("https://") || address.starts_with("http://")) {
        return Some("webpush");
    }
    // A number WhatsApp cannot reach may still take SMS: its marks are its own.
    if channel == "whatsapp" {
        return Some("whatsapp");
    }
    address_kind(channel)
}

/// What one workspace's deliveries in a claimed batch share.
struct WorkspaceBatch {
    settings: MessagingSettings,
    workspace_zone: String,
    facts: HashMap<String, RecipientFacts>,
    email: Option<Result<Arc<EmailSender>, Outcome>>,
    link_key: Option<Vec<u8>>,
    twilio: Option<Result<Arc<TwilioConfig>, Outcome>>,
    vapid: Option<Arc<VapidKey>>,
    fcm: Option<Result<Arc<FcmConfig>, Outcome>>,
    apns: Option<Result<Arc<ApnsConfig>, Outcome>>,
    webhook: Option<Result<Arc<WebhookChannelConfig>, Outcome>>,
}

/// A claimed delivery handed back to the queue, due at `at`, as not sent.
fn released(id: String, reason: &str, at: DateTime<Utc>) -> DeliveryUpdate {
    DeliveryUpdate {
        id,
        status: DeliveryStatus::Queued,
        reason: Some(reason.into()),
        error_code: None,
        provider_id: None,
        run_at: Some(at),
        sent_at: None,
        not_attempted: true,
    }
}

#[derive(Clone)]
enum Outcome {
    /// Not sent, and nothing wrong with the message or its channel: back to the queue after the
    /// given delay (a claim running out, a shutdown, the store failing before the send).
    Released(String, Duration),
    Suppressed(Suppression),
    Deferred(DateTime<Utc>),
    Retry(String, Option<std::time::Duration>),
    /// This one address (a web push endpoint a visitor gave) did not answer: retried with backoff,
    /// marked unreachable when given up on, and never counted against the campaign.
    AddressRetry(String),
    /// The provider could not be reached at all; nothing was sent.
    Unavailable(String),
    Misconfigured(String),
    Failed(String, Option<String>),
    Bounced(String, Option<String>),
}

impl From<SendError> for Outcome {
    fn from(err: SendError) -> Self {
        match err {
            SendError::Retryable { message, retry_after } => Outcome::Retry(message, retry_after),
            SendError::Unavailable { message } => Outcome::Unavailable(message),
            SendError::Misconfigured { message } => Outcome::Misconfigured(message),
            SendError::Permanent { message, code, address_unreachable: true } => Outcome::Bounced(message, code),
            SendError::Permanent { message, code, .. } => Outcome::Failed(message, code),
        }
    }
}

/// Where a delivery that has no stored template (a call placed through the API) keeps its own,
/// in `event`.
const INLINE_TEMPLATE: &str = "inline_template";

fn inline_template(delivery: &NewDelivery) -> Option<TemplateSource> {
    serde_json::from_value(delivery.event.as_ref()?.get(INLINE_TEMPLATE)?.clone()).ok()
}

/// A call to place (`POST /api/v1/calls`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    /// The number to ring (E.164).
    pub to: String,
    /// The bot that talks once the call is answered.
    pub bot: String,
    /// The intent the call starts.
    pub intent: Option<String>,
    /// Slot values the intent starts with.
    pub slots: std::collections::BTreeMap<String, String>,
    /// Said first when the call is answered (Liquid).
    pub greeting: Option<String>,
    /// Marketing calls keep quiet hours and caps; transactional ones only consent.
    pub kind: SendKind,
}

impl CallRequest {
    fn template_source(&self) -> TemplateSource {
        TemplateSource {
            channel: "voice".into(),
            body: self.greeting.clone().unwrap_or_default(),
            bot: Some(self.bot.clone()),
            intent: self.intent.clone(),
            slots: (!self.slots.is_empty()).then(|| self.slots.clone()),
            ..TemplateSource::default()
        }
    }
}

/// A placed call's script, rendered for its callee.
#[derive(Debug, Clone)]
pub struct CallScript {
    /// The call's delivery.
    pub delivery: Delivery,
    /// Said first (may be empty).
    pub greeting: String,
    /// The bot, intent and slots.
    pub call: template::RenderedCall,
}

/// The identity kind that carries a channel's address.
pub fn address_kind(channel: &str) -> Option<&'static str> {
    crossline_store::segment_sql::address_kinds(channel).first().copied()
}

/// The recipient's address on a channel. Push: the newest registered push address that is not
/// unreachable (else the newest), then a device token from events.
fn address_for(facts: &RecipientFacts, channel: &str) -> Option<String> {
    // The webhook channel calls the business's own system about the profile, and an in-app message
    // waits on the profile for its app: always reachable.
    if channel == "webhook" || channel == "in_app" {
        return Some(facts.profile.id.clone());
    }
    let kind = address_kind(channel)?;
    let identities = facts.profile.identities.iter().filter(|identity| identity.kind.as_str() == kind);
    if channel != "push" {
        return identities.map(|identity| identity.value.clone()).next();
    }
    let candidates: Vec<&str> = facts
        .push
        .iter()
        .map(|registered| registered.value.as_str())
        .chain(identities.map(|identity| identity.value.as_str()))
        .collect();
    candidates
        .iter()
        .find(|address| !is_unreachable(facts, channel, address))
        .or(candidates.first())
        .map(|address| (*address).to_owned())
}

fn consent_of(profile: &Profile, channel: &str) -> ConsentStatus {
    profile.consent.0.get(channel).map(|entry| entry.status).unwrap_or(ConsentStatus::Unknown)
}
