//! Identity resolution and event storage, written once for every backend.
//!
//! A batch is resolved in three steps so that a backend answers each question with one query:
//! which `messageId`s are already stored, which profiles own the batch's identities, and those
//! profiles' state. Events are then applied in order in memory (creating profiles, attaching
//! identities, merging, setting traits and consent), and the changes are written back in bulk.

#![allow(async_fn_in_trait)] // Implemented only inside this crate; callers use concrete types.

use crate::{IngestedEvent, StoreResult};
use chrono::{DateTime, Utc};
use crossline_core::event::{EventKind, NormalizedEvent};
use crossline_core::ids::new_id;
use crossline_core::limits::{LimitExceeded, ProfileLimits, json_size};
use crossline_core::profile::{ProfileState, survivor_of};
use crossline_core::{Identity, IdentityKind};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use serde_json::{Map, Value, json};

/// An event row ready to insert.
#[derive(Debug, Clone)]
pub struct EventRow<'a> {
    /// The `messageId`.
    pub message_id: String,
    /// Owning profile.
    pub profile_id: String,
    /// Call type.
    pub kind: EventKind,
    /// Name.
    pub name: Option<&'a str>,
    /// Properties.
    pub properties: std::borrow::Cow<'a, Map<String, Value>>,
    /// Context.
    pub context: std::borrow::Cow<'a, Map<String, Value>>,
    /// Event time.
    pub timestamp: DateTime<Utc>,
    /// Receive time.
    pub received_at: DateTime<Utc>,
    /// Channel.
    pub channel: &'a str,
}

/// What one batch writes once it is decided.
pub struct BatchWrites<'b, 'r> {
    /// New identities and the profile each goes to.
    pub identities: &'b [(Identity, String)],
    /// When they were attached.
    pub now: DateTime<Utc>,
    /// New events.
    pub rows: &'b [EventRow<'r>],
    /// `(day since epoch, channel, events)` to add to the counters.
    pub counts: &'b [(i64, &'b str, i64)],
    /// Changed profiles, in id order.
    pub profiles: &'b [&'b ProfileState],
}

/// The statements a backend provides inside one transaction.
pub trait IngestTx {
    /// Which of these message ids the workspace already stores.
    async fn existing_message_ids(&mut self, workspace_id: &str, ids: &[&str]) -> StoreResult<HashSet<String>>;
    /// The live profile owning each of these identities (absent ones omitted).
    async fn identity_owners(
        &mut self,
        workspace_id: &str,
        identities: &[Identity],
    ) -> StoreResult<HashMap<Identity, String>>;
    /// Which of these message ids are stored, and the live profile owning each identity: both
    /// reads at once where the backend can. The caller asks for the identities of every event, a
    /// duplicate's too (their owners are read and locked for nothing, rarely).
    async fn read_batch(
        &mut self,
        workspace_id: &str,
        ids: &[&str],
        identities: &[Identity],
    ) -> StoreResult<(HashSet<String>, HashMap<Identity, String>)> {
        let existing = self.existing_message_ids(workspace_id, ids).await?;
        let owners =
            if identities.is_empty() { HashMap::new() } else { self.identity_owners(workspace_id, identities).await? };
        Ok((existing, owners))
    }
    /// The state of these live profiles.
    async fn load_profiles(&mut self, workspace_id: &str, ids: &[String]) -> StoreResult<Vec<ProfileState>>;
    /// Move a stored profile's identities to `survivor`, make its events the survivor's (moved, or
    /// found through the tombstone) and leave a tombstone that resolves `loser` (and anything
    /// merged into it before) to `survivor`.
    async fn merge_stored_profile(&mut self, workspace_id: &str, survivor: &str, loser: &str) -> StoreResult<()>;
    /// Attach identities to profiles.
    async fn insert_identities(
        &mut self,
        workspace_id: &str,
        identities: &[(Identity, String)],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Insert events (their message ids are known to be new).
    async fn insert_events(&mut self, workspace_id: &str, rows: &[EventRow<'_>]) -> StoreResult<()>;
    /// Add to the per-day, per-channel event counters: `(day since epoch, channel, events)`.
    async fn add_event_counts(&mut self, workspace_id: &str, counts: &[(i64, &str, i64)]) -> StoreResult<()>;
    /// Insert or update profiles.
    async fn upsert_profiles(&mut self, workspace_id: &str, profiles: &[&ProfileState]) -> StoreResult<()>;
    /// Writes what a batch decided, in this order: new identities, events, their counts, changed
    /// profiles (a part with nothing in it is skipped).
    async fn write_batch(&mut self, workspace_id: &str, batch: BatchWrites<'_, '_>) -> StoreResult<()> {
        if !batch.identities.is_empty() {
            self.insert_identities(workspace_id, batch.identities, batch.now).await?;
        }
        if !batch.rows.is_empty() {
            self.insert_events(workspace_id, batch.rows).await?;
        }
        if !batch.counts.is_empty() {
            self.add_event_counts(workspace_id, batch.counts).await?;
        }
        if !batch.profiles.is_empty() {
            self.upsert_profiles(workspace_id, batch.profiles).await?;
        }
        Ok(())
    }
    /// How many identities of each kind a stored profile has.
    async fn identity_counts(
        &mut self,
        workspace_id: &str,
        profile_id: &str,
    ) -> StoreResult<Vec<(IdentityKind, usize)>>;
}

struct Resolution<'a> {
    profiles: HashMap<String, ProfileState>,
    stored: HashSet<String>,
    dirty: HashSet<String>,
    redirect: HashMap<String, String>,
    owners: HashMap<Identity, String>,
    new_identities: Vec<(Identity, String)>,
    rows: Vec<EventRow<'a>>,
    // Merge records wait here until the event that caused them is recorded, so they follow it.
    merge_rows: Vec<EventRow<'a>>,
    /// Identities per kind of the profiles this batch attached identities to, read when first needed.
    identity_counts: HashMap<String, HashMap<IdentityKind, usize>>,
    limits: &'a ProfileLimits,
}

impl Resolution<'_> {
    /// The live profile `id` ended up in after this batch's merges.
    fn resolve<'s>(&'s self, id: &'s str) -> &'s str {
        let mut current = id;
        while let Some(next) = self.redirect.get(current) {
            current = next;
        }
        current
    }
}

/// Apply a batch of events in a transaction. The caller commits.
pub async fn apply_batch<T: IngestTx>(
    tx: &mut T,
    workspace_id: &str,
    events: &[NormalizedEvent],
    now: DateTime<Utc>,
    limits: &ProfileLimits,
) -> StoreResult<Vec<IngestedEvent>> {
    let message_ids: Vec<&str> = events.iter().map(|event| event.message_id.as_str()).collect();
    let mut wanted: Vec<Identity> = Vec::new();
    let mut wanted_set = HashSet::new();
    for event in events {
        for identity in event.identities.iter().chain(&event.previous_ids) {
            if wanted_set.insert(identity) {
                wanted.push(identity.clone());
            }
        }
    }
    let (existing, owners) = tx.read_batch(workspace_id, &message_ids, &wanted).await?;

    let mut seen = HashSet::new();
    let fresh: Vec<bool> = events
        .iter()
        .map(|event| !existing.contains(&event.message_id) && seen.insert(event.message_id.as_str()))
        .collect();
    // Profile state is read (and its JSON parsed) only where an event may change the profile: a
    // `track` by a known user needs nothing but the owner's id. Anything missed here is loaded
    // on demand by `ensure_loaded`.
    let mut needed: HashSet<&String> = HashSet::new();
    for (event, _) in events.iter().zip(&fresh).filter(|(_, fresh)| **fresh) {
        if may_change_profile(event) {
            needed
                .extend(event.identities.iter().chain(&event.previous_ids).filter_map(|identity| owners.get(identity)));
        }
    }
    let mut needed: Vec<String> = needed.into_iter().cloned().collect();
    needed.sort();
    let loaded = if needed.is_empty() { Vec::new() } else { tx.load_profiles(workspace_id, &needed).await? };

    let mut state = Resolution {
        stored: owners.values().cloned().collect(),
        profiles: loaded.into_iter().map(|profile| (profile.id.clone(), profile)).collect(),
        dirty: HashSet::new(),
        redirect: HashMap::new(),
        owners,
        new_identities: Vec::new(),
        rows: Vec::with_capacity(events.len()),
        merge_rows: Vec::new(),
        identity_counts: HashMap::new(),
        limits,
    };

    let mut results = Vec::with_capacity(events.len());
    for (event, fresh) in events.iter().zip(fresh) {
        if !fresh {
            results.push(IngestedEvent {
                message_id: event.message_id.clone(),
                profile_id: None,
                stored: false,
                merged: Vec::new(),
                rejected: None,
            });
            continue;
        }
        let applied = match limits.check_event(event) {
            Ok(()) => apply_event(tx, workspace_id, event, now, &mut state).await?,
            Err(exceeded) => Err(exceeded),
        };
        results.push(match applied {
            Ok((profile_id, merged)) => IngestedEvent {
                message_id: event.message_id.clone(),
                profile_id: Some(profile_id),
                stored: true,
                merged,
                rejected: None,
            },
            Err(exceeded) => IngestedEvent {
                message_id: event.message_id.clone(),
                profile_id: None,
                stored: false,
                merged: Vec::new(),
                rejected: Some(exceeded),
            },
        });
    }

    // Later events of the batch may have merged away profiles that earlier rows point at.
    let mut identities = std::mem::take(&mut state.new_identities);
    let mut rows = std::mem::take(&mut state.rows);
    if !state.redirect.is_empty() {
        for profile_id in results
            .iter_mut()
            .filter_map(|result| result.profile_id.as_mut())
            .chain(identities.iter_mut().map(|(_, owner)| owner))
            .chain(rows.iter_mut().map(|row| &mut row.profile_id))
        {
            let live = state.resolve(profile_id);
            if live != profile_id.as_str() {
                *profile_id = live.to_owned();
            }
        }
    }
    let mut counts: HashMap<(i64, &str), i64> = HashMap::new();
    for row in &rows {
        *counts.entry((row.timestamp.timestamp().div_euclid(86_400), row.channel)).or_default() += 1;
    }
    let mut counts: Vec<(i64, &str, i64)> =
        counts.into_iter().map(|((day, channel), count)| (day, channel, count)).collect();
    counts.sort_unstable();
    let mut dirty: Vec<&ProfileState> = state.dirty.iter().filter_map(|id| state.profiles.get(id)).collect();
    dirty.sort_by(|a, b| a.id.cmp(&b.id));
    let batch = BatchWrites { identities: &identities, now, rows: &rows, counts: &counts, profiles: &dirty };
    tx.write_batch(workspace_id, batch).await?;
    Ok(results)
}

/// Whether applying the event may need the profile's state: it sets traits or consent, or names
/// more than one identity (a new identity to attach, or a merge).
fn may_change_profile(event: &NormalizedEvent) -> bool {
    !event.traits.is_empty() || !event.consent.is_empty() || event.identities.len() + event.previous_ids.len() > 1
}

/// Load the state of stored profiles not loaded yet.
async fn ensure_loaded<T: IngestTx>(
    tx: &mut T,
    workspace_id: &str,
    ids: &[String],
    state: &mut Resolution<'_>,
) -> StoreResult<()> {
    let missing: Vec<String> = ids.iter().filter(|id| !state.profiles.contains_key(*id)).cloned().collect();
    if missing.is_empty() {
        return Ok(());
    }
    for profile in tx.load_profiles(workspace_id, &missing).await? {
        state.profiles.insert(profile.id.clone(), profile);
    }
    match missing.iter().find(|id| !state.profiles.contains_key(*id)) {
        // An identity pointing at a profile that is not live: the graph is inconsistent, so stop
        // rather than attach events to nothing.
        Some(id) => Err(crate::StoreError::Backend(format!("identity owner {id} is not a live profile"))),
        None => Ok(()),
    }
}

/// The identities per kind of a profile, read once per batch (a profile made in this batch has none
/// stored).
async fn identity_counts<'s, T: IngestTx>(
    tx: &mut T,
    workspace_id: &str,
    profile_id: &str,
    state: &'s mut Resolution<'_>,
) -> StoreResult<&'s mut HashMap<IdentityKind, usize>> {
    if !state.identity_counts.contains_key(profile_id) {
        let counts = if state.stored.contains(profile_id) {
            tx.identity_counts(workspace_id, profile_id).await?.into_iter().collect()
        } else {
            HashMap::new()
        };
        state.identity_counts.insert(profile_id.to_owned(), counts);
    }
    Ok(state.identity_counts.get_mut(profile_id).expect("inserted above"))
}

/// Check that merging `losers` into `survivor` and attaching `attach` keeps every limit; nothing
/// is changed when it does not.
async fn check_limits<T: IngestTx>(
    tx: &mut T,
    workspace_id: &str,
    event: &NormalizedEvent,
    survivor: &str,
    losers: &[String],
    attach: &[&Identity],
    state: &mut Resolution<'_>,
) -> StoreResult<Result<(), LimitExceeded>> {
    let limits = *state.limits;
    if !attach.is_empty() || !losers.is_empty() {
        let mut combined: HashMap<IdentityKind, usize> =
            identity_counts(tx, workspace_id, survivor, state).await?.clone();
        for loser in losers {
            for (kind, count) in identity_counts(tx, workspace_id, loser, state).await?.iter() {
                *combined.entry(*kind).or_default() += count;
            }
        }
        for identity in attach {
            *combined.entry(identity.kind).or_default() += 1;
        }
        if let Some((kind, _)) = combined.iter().find(|(_, count)| **count > limits.identities_per_kind) {
            return Ok(Err(LimitExceeded::too_many_identities(*kind, &limits)));
        }
    }
    if !event.traits.is_empty() || !losers.is_empty() {
        let profiles: Vec<String> = std::iter::once(survivor.to_owned()).chain(losers.iter().cloned()).collect();
        ensure_loaded(tx, workspace_id, &profiles, state).await?;
        // Each trait's size (name and value as JSON) as the profile would hold it; where merged
        // profiles share a name, the larger value counts, so the check never lets too much through.
        let mut sizes: HashMap<&str, usize> = HashMap::new();
        for profile in profiles.iter().filter_map(|id| state.profiles.get(id)) {
            for (name, value) in &profile.traits {
                let size = name.len() + json_size(value);
                sizes.entry(name.as_str()).and_modify(|known| *known = (*known).max(size)).or_insert(size);
            }
        }
        for (name, value) in &event.traits {
            if value.is_null() {
                sizes.remove(name.as_str());
            } else {
                sizes.insert(name, name.len() + json_size(value));
            }
        }
        if sizes.len() > limits.traits_per_profile {
            return Ok(Err(LimitExceeded::too_many_traits(&limits)));
        }
        let total: usize = sizes.values().sum();
        if total > limits.trait_bytes_per_profile {
            return Ok(Err(LimitExceeded::traits_too_large(total, &limits)));
        }
    }
    Ok(Ok(()))
}

async fn apply_event<'a, T: IngestTx>(
    tx: &mut T,
    workspace_id: &str,
    event: &'a NormalizedEvent,
    now: DateTime<Utc>,
    state: &mut Resolution<'a>,
) -> StoreResult<Result<(String, Vec<String>), LimitExceeded>> {
    let mut candidates: Vec<String> = Vec::new();
    for identity in event.identities.iter().chain(&event.previous_ids) {
        if let Some(owner) = state.owners.get(identity) {
            let owner = state.resolve(owner);
            if !candidates.iter().any(|candidate| candidate == owner) {
                candidates.push(owner.to_owned());
            }
        }
    }

    let mut attach: Vec<&Identity> = event.identities.iter().collect();
    // An alias whose previous id nobody owns yet: it was, by Segment convention, an anonymous id.
    if event.kind == EventKind::Alias
        && !event.previous_ids.iter().any(|identity| state.owners.contains_key(identity))
        && let Some(anonymous) = event.previous_ids.iter().find(|identity| identity.kind == IdentityKind::AnonymousId)
    {
        attach.push(anonymous);
    }
    // Each identity once: analytics.js sends an alias's `anonymousId` equal to its `previousId`.
    let mut named = HashSet::new();
    attach.retain(|identity| !state.owners.contains_key(*identity) && named.insert(*identity));

    let mut merged = Vec::new();
    let profile_id = match candidates.len() {
        0 => {
            let id = new_id("prf");
            // A new profile holds only this event's identities and traits, which `check_event`
            // bounds except for the identities per kind.
            let mut per_kind: HashMap<IdentityKind, usize> = HashMap::new();
            for identity in &attach {
                *per_kind.entry(identity.kind).or_default() += 1;
            }
            if let Some((kind, _)) = per_kind.iter().find(|(_, count)| **count > state.limits.identities_per_kind) {
                return Ok(Err(LimitExceeded::too_many_identities(*kind, state.limits)));
            }
            state.profiles.insert(id.clone(), ProfileState::new(id.clone(), now));
            state.dirty.insert(id.clone());
            state.identity_counts.insert(id.clone(), HashMap::new());
            id
        }
        1 => {
            let profile_id = candidates.remove(0);
            if let Err(exceeded) = check_limits(tx, workspace_id, event, &profile_id, &[], &attach, state).await? {
                return Ok(Err(exceeded));
            }
            profile_id
        }
        _ => {
            ensure_loaded(tx, workspace_id, &candidates, state).await?;
            let survivor = candidates
                .iter()
                .filter_map(|id| state.profiles.get(id))
                .reduce(|a, b| survivor_of(a, b))
                .map(|profile| profile.id.clone())
                .expect("every candidate profile is loaded");
            let losers: Vec<String> = candidates.iter().filter(|id| **id != survivor).cloned().collect();
            if let Err(exceeded) = check_limits(tx, workspace_id, event, &survivor, &losers, &attach, state).await? {
                return Ok(Err(exceeded));
            }
            for loser in &losers {
                merge(tx, workspace_id, &survivor, loser, event, state).await?;
                merged.push(loser.clone());
            }
            survivor
        }
    };

    let mut changed = false;
    for identity in attach {
        state.owners.insert(identity.clone(), profile_id.clone());
        state.new_identities.push((identity.clone(), profile_id.clone()));
        if let Some(counts) = state.identity_counts.get_mut(&profile_id) {
            *counts.entry(identity.kind).or_default() += 1;
        }
        changed = true;
    }
    if changed || !event.traits.is_empty() || !event.consent.is_empty() {
        ensure_loaded(tx, workspace_id, std::slice::from_ref(&profile_id), state).await?;
    } else {
        // Nothing about the profile changes; its state is not needed.
        state.rows.push(event_row(event, &profile_id));
        state.rows.append(&mut state.merge_rows);
        return Ok(Ok((profile_id, merged)));
    }
    let profile = state.profiles.get_mut(&profile_id).expect("ensure_loaded loaded it");
    if !event.traits.is_empty() {
        changed |= profile.apply_traits(&event.traits, event.timestamp);
    }
    if !event.consent.is_empty() {
        profile.apply_consent(&event.consent, "traits", event.timestamp);
        changed = true;
    }
    if changed {
        profile.updated_at = profile.updated_at.max(now);
        state.dirty.insert(profile_id.clone());
    }

    state.rows.push(event_row(event, &profile_id));
    state.rows.append(&mut state.merge_rows);
    Ok(Ok((profile_id, merged)))
}

fn event_row<'a>(event: &'a NormalizedEvent, profile_id: &str) -> EventRow<'a> {
    EventRow {
        message_id: event.message_id.clone(),
        profile_id: profile_id.to_owned(),
        kind: event.kind,
        name: event.name.as_deref(),
        properties: std::borrow::Cow::Borrowed(&event.properties),
        context: std::borrow::Cow::Borrowed(&event.context),
        timestamp: event.timestamp,
        received_at: event.received_at,
        channel: &event.channel,
    }
}

async fn merge<'a, T: IngestTx>(
    tx: &mut T,
    workspace_id: &str,
    survivor: &str,
    loser: &str,
    cause: &'a NormalizedEvent,
    state: &mut Resolution<'a>,
) -> StoreResult<()> {
    if let Some(loser_counts) = state.identity_counts.remove(loser)
        && let Some(survivor_counts) = state.identity_counts.get_mut(survivor)
    {
        for (kind, count) in loser_counts {
            *survivor_counts.entry(kind).or_default() += count;
        }
    }
    let loser_state = state.profiles.remove(loser).expect("the merged profile is loaded");
    let survivor_state = state.profiles.get_mut(survivor).expect("the surviving profile is loaded");
    survivor_state.absorb(&loser_state);
    state.dirty.insert(survivor.to_owned());
    state.dirty.remove(loser);
    state.redirect.insert(loser.to_owned(), survivor.to_owned());
    for owner in state.owners.values_mut() {
        if owner == loser {
            *owner = survivor.to_owned();
        }
    }
    if !state.stored.contains(loser) {
        // Created earlier in this batch: store it first, so its id (named in the merge record and
        // maybe already handed out) resolves to the survivor like any other merged-away id.
        tx.upsert_profiles(workspace_id, &[&loser_state]).await?;
    }
    tx.merge_stored_profile(workspace_id, survivor, loser).await?;
    let properties = json!({
        "merged_profile_id": loser,
        "survivor_profile_id": survivor,
        "cause_message_id": cause.message_id,
        "cause_type": cause.kind.as_str(),
    });
    let Value::Object(properties) = properties else { unreachable!("json! object literal") };
    state.merge_rows.push(EventRow {
        message_id: format!("merge_{loser}"),
        profile_id: survivor.to_owned(),
        kind: EventKind::Merge,
        name: Some("Profiles Merged"),
        properties: std::borrow::Cow::Owned(properties),
        context: std::borrow::Cow::Owned(Map::new()),
        timestamp: cause.timestamp,
        received_at: cause.received_at,
        channel: "system",
    });
    Ok(())
}
