//! The bot registry: bot versions stored, parsed, trained and kept ready to take turns.
//!
//! - **Models** live in a bounded cache ([`ModelCache`], least recently used first out): a
//!   conversation finishes on the bot version it started with, so older versions are kept while
//!   they are used, and an evicted version is trained again from the store when it is next needed.
//! - **Latest versions** ([`LatestVersions`]): this node trusts its idea of a bot's latest version
//!   for [`LATEST_VERSION_TTL`] before asking the store again; a save on this node is seen at once,
//!   one on another node within that time.
//! - Training runs on the blocking pool, never on the async runtime.

use crate::egress::Egress;
use crossline_nlu::Recognizer;
use crossline_store::{DynStore, StoreError, StoredBot};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long this node trusts its idea of a bot's latest version.
pub const LATEST_VERSION_TTL: Duration = Duration::from_secs(1);

/// Trained bot versions a node keeps at most, by default.
pub const DEFAULT_MODEL_CAPACITY: usize = 64;

/// A bot version ready to take turns: as stored, parsed, and trained.
pub struct LiveBot {
    /// The stored version.
    pub stored: StoredBot,
    /// Its definition, parsed.
    pub definition: crossline_bot::BotDefinition,
    /// Its trained model.
    pub model: Recognizer,
}

/// Why a bot could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// No bot of that name (or no such version) in the workspace.
    #[error("no bot of that name")]
    NotFound,
    /// The definition is invalid: the sentence names the field.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that should not happen (a stored version that no longer trains, a crashed task).
    #[error("{0}")]
    Internal(String),
}

/// A bot version: workspace id, name and version.
type BotKey = (String, String, i64);

/// A use counter, and the cached models with the count at their last use.
type Entries = (u64, HashMap<BotKey, (u64, Arc<LiveBot>)>);

/// Trained models, at most `capacity`, the least recently used evicted first.
pub struct ModelCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl ModelCache {
    /// A cache of at most `capacity` models (at least one).
    pub fn new(capacity: usize) -> Self {
        ModelCache { capacity: capacity.max(1), entries: Mutex::default() }
    }

    /// A model, marked as just used.
    pub fn get(&self, workspace_id: &str, name: &str, version: i64) -> Option<Arc<LiveBot>> {
        let mut guard = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (clock, entries) = &mut *guard;
        *clock += 1;
        let entry = entries.get_mut(&(workspace_id.to_owned(), name.to_owned(), version))?;
        entry.0 = *clock;
        Some(entry.1.clone())
    }

    /// Keep a model, evicting the least recently used one when full.
    pub fn put(&self, workspace_id: &str, bot: Arc<LiveBot>) {
        let mut guard = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (clock, entries) = &mut *guard;
        *clock += 1;
        let key = (workspace_id.to_owned(), bot.stored.name.clone(), bot.stored.version);
        if !entries.contains_key(&key)
            && entries.len() >= self.capacity
            && let Some(oldest) = entries.iter().min_by_key(|(_, (used, _))| *used).map(|(key, _)| key.clone())
        {
            entries.remove(&oldest);
            metrics::counter!("crossline_bot_models_evicted_total").increment(1);
        }
        entries.insert(key, (*clock, bot));
    }

    /// How many models it holds.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Each bot's latest version as last seen, and when.
#[derive(Default)]
pub struct LatestVersions {
    seen: Mutex<HashMap<(String, String), (Instant, i64)>>,
}

impl LatestVersions {
    /// Note the latest version of a bot, as just read from the store or written to it.
    pub fn saw(&self, workspace_id: &str, name: &str, version: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = seen.entry((workspace_id.to_owned(), name.to_owned())).or_insert((Instant::now(), 0));
        *entry = (Instant::now(), entry.1.max(version));
    }

    /// The latest version, if it was seen less than [`LATEST_VERSION_TTL`] ago.
    pub fn fresh(&self, workspace_id: &str, name: &str) -> Option<i64> {
        let seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.get(&(workspace_id.to_owned(), name.to_owned()))
            .filter(|(checked, _)| checked.elapsed() < LATEST_VERSION_TTL)
            .map(|(_, version)| *version)
    }
}

/// Bots on this node: stored, trained, cached.
pub struct BotRegistry {
    store: DynStore,
    egress: Egress,
    models: ModelCache,
    latest: LatestVersions,
}

impl BotRegistry {
    /// A registry reading `store`, checking webhook URLs with `egress`, keeping `capacity` models.
    pub fn new(store: DynStore, egress: Egress, capacity: usize) -> Self {
        BotRegistry { store, egress, models: ModelCache::new(capacity), latest: LatestVersions::default() }
    }

    /// Validate, train and store a new version of a bot; live on this node at once. A fulfilment
    /// webhook must be a URL the egress rules allow (CONTRACT: refused when saved).
    pub async fn put(&self, workspace_id: &str, name: &str, definition: &Value) -> Result<Arc<LiveBot>, BotError> {
        let (parsed, model) = train(definition.clone()).await?;
        for (index, intent) in parsed.intents.iter().enumerate() {
            if let Some(crossline_bot::Fulfillment::Webhook { webhook }) = &intent.fulfillment {
                self.egress
                    .check_url(webhook)
                    .await
                    .map_err(|err| BotError::Invalid(format!("intents[{index}].fulfillment.webhook: {err}")))?;
            }
        }
        let stored = self.store.put_bot(workspace_id, name, definition).await?;
        tracing::info!(workspace = workspace_id, bot = name, version = stored.version, "bot trained and live");
        let bot = Arc::new(LiveBot { stored, definition: parsed, model });
        self.keep(workspace_id, bot.clone());
        Ok(bot)
    }

    /// A version of a bot (the latest when None), trained (here, if this node has not yet).
    pub async fn live(&self, workspace_id: &str, name: &str, version: Option<i64>) -> Result<Arc<LiveBot>, BotError> {
        let known = version.or_else(|| self.latest.fresh(workspace_id, name));
        if let Some(version) = known
            && let Some(bot) = self.models.get(workspace_id, name, version)
        {
            return Ok(bot);
        }
        let stored = self.store.bot(workspace_id, name, version).await?.ok_or(BotError::NotFound)?;
        if version.is_none() {
            self.latest.saw(workspace_id, name, stored.version);
        }
        if let Some(bot) = self.models.get(workspace_id, name, stored.version) {
            return Ok(bot);
        }
        let (definition, model) = train(stored.definition.clone()).await.map_err(|err| {
            BotError::Internal(format!("stored bot {name} v{} no longer trains: {err}", stored.version))
        })?;
        metrics::counter!("crossline_bot_models_trained_total").increment(1);
        let bot = Arc::new(LiveBot { stored, definition, model });
        self.keep(workspace_id, bot.clone());
        Ok(bot)
    }

    /// How many trained models this node keeps now.
    pub fn models(&self) -> usize {
        self.models.len()
    }

    fn keep(&self, workspace_id: &str, bot: Arc<LiveBot>) {
        self.latest.saw(workspace_id, &bot.stored.name, bot.stored.version);
        self.models.put(workspace_id, bot);
    }
}

/// Validate, parse and train on the blocking pool.
pub async fn train(definition: Value) -> Result<(crossline_bot::BotDefinition, Recognizer), BotError> {
    let trained = tokio::task::spawn_blocking(move || {
        let parsed = crossline_bot::parse(&definition)?;
        let model = crossline_bot::compile(&parsed)?;
        Ok::<_, crossline_bot::DefinitionError>((parsed, model))
    })
    .await
    .map_err(|err| BotError::Internal(format!("training stopped: {err}")))?;
    trained.map_err(|err| BotError::Invalid(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(reply: &str) -> Value {
        json!({"intents": [
            {"name": "hours", "utterances": ["when are you open", "opening hours", "what time do you close"],
             "fulfillment": {"response": reply}},
            {"name": "bye", "utterances": ["goodbye", "bye", "see you"], "fulfillment": {"response": "Bye!"}}
        ]})
    }

    async fn registry(capacity: usize) -> (tempfile::TempDir, BotRegistry, String) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let workspace = crossline_store::testsuite::sample_workspace("bots");
        store.create_workspace(&workspace, "w", "a").await.unwrap();
        (dir, BotRegistry::new(store, Egress::new(Default::default()), capacity), workspace.id)
    }

    #[tokio::test]
    async fn models_are_bounded_and_evicted_versions_are_trained_again() {
        let (_dir, registry, workspace) = registry(2).await;
        for version in 1..=3 {
            let bot = registry.put(&workspace, "help", &definition(&format!("9 to 5, v{version}"))).await.unwrap();
            assert_eq!(bot.stored.version, version);
            assert!(registry.models() <= 2, "at most two models are kept");
        }
        // Version 1 was evicted (least recently used); asking for it trains it again from the store.
        let first = registry.live(&workspace, "help", Some(1)).await.unwrap();
        assert_eq!(first.stored.version, 1);
        assert_eq!(registry.models(), 2);
        assert_eq!(registry.live(&workspace, "help", None).await.unwrap().stored.version, 3);
        assert!(matches!(registry.live(&workspace, "nobody", None).await, Err(BotError::NotFound)));
        assert!(matches!(registry.live(&workspace, "help", Some(9)).await, Err(BotError::NotFound)));
    }

    #[tokio::test]
    async fn invalid_definitions_and_private_webhooks_are_refused() {
        let (_dir, registry, workspace) = registry(4).await;
        let invalid = registry.put(&workspace, "help", &json!({"intents": []})).await;
        assert!(matches!(invalid, Err(BotError::Invalid(_))), "{:?}", invalid.err());
        let mut private = definition("x");
        private["intents"][1]["fulfillment"] = json!({"webhook": "http://169.254.169.254/latest/meta-data"});
        private["webhook_secret"] = json!("a-secret-of-sixteen-plus");
        match registry.put(&workspace, "help", &private).await {
            Err(BotError::Invalid(message)) => {
                assert!(message.starts_with("intents[1].fulfillment.webhook: "), "{message}")
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(registry.live(&workspace, "help", None).await, Err(BotError::NotFound)), "nothing was stored");
    }
}
