//! The writer's memory of which profile owns an identity.
//!
//! Most events come from people the store already knows, and finding their profile was a B-tree
//! search per identity on the writer thread, the one thread every ingested event passes through.
//! The writer is the only connection that changes identities, so it can remember what it read and
//! wrote (a merge tells it every identity it moved), as long as it forgets whatever a rolled-back
//! transaction or another kind of write may have changed (the callers
//! [`clear`](IdentityCache::clear) it then).
//!
//! Memory is bounded with two generations: lookups and inserts go to the current one; when it is
//! full it becomes the previous one (whose hits move back into the current one) and the old
//! previous one is dropped. So people seen recently stay, and at most `2 × GENERATION` identities
//! are held (about 170 bytes each with their keys and profile ids: ~35 MB at the bound).

use crossline_core::{Identity, IdentityKind};
use foldhash::HashMap;
use std::sync::Arc;

/// Identities per generation.
const GENERATION: usize = 100_000;

/// One map per identity kind, so a lookup borrows the identity's value instead of building a key.
type Owners = [HashMap<Box<str>, Arc<str>>; IdentityKind::ALL.len()];

#[derive(Default)]
struct Generations {
    current: Owners,
    previous: Owners,
}

/// Identity → owning profile, per workspace, as the writer last stored or read it.
#[derive(Default)]
pub(super) struct IdentityCache {
    workspaces: HashMap<Box<str>, Generations>,
    /// Identities in the current generations.
    current: usize,
}

fn slot(kind: IdentityKind) -> usize {
    IdentityKind::ALL.iter().position(|candidate| *candidate == kind).unwrap_or_default()
}

impl IdentityCache {
    /// The live profile owning `identity`, if the writer knows it.
    pub(super) fn get(&mut self, workspace_id: &str, identity: &Identity) -> Option<Arc<str>> {
        let generations = self.workspaces.get_mut(workspace_id)?;
        let index = slot(identity.kind);
        if let Some(owner) = generations.current[index].get(identity.value.as_str()) {
            return Some(owner.clone());
        }
        let (value, owner) = generations.previous[index].remove_entry(identity.value.as_str())?;
        generations.current[index].insert(value, owner.clone());
        self.current += 1;
        self.rotate_if_full();
        Some(owner)
    }

    /// Remember that `owner` owns `identity`.
    pub(super) fn insert(&mut self, workspace_id: &str, identity: &Identity, owner: &str) {
        let generations = self.workspaces.entry(workspace_id.into()).or_default();
        let previous = generations.current[slot(identity.kind)].insert(identity.value.as_str().into(), owner.into());
        if previous.is_none() {
            self.current += 1;
        }
        self.rotate_if_full();
    }

    /// Forget everything.
    pub(super) fn clear(&mut self) {
        self.workspaces.clear();
        self.current = 0;
    }

    fn rotate_if_full(&mut self) {
        if self.current < GENERATION {
            return;
        }
        for generations in self.workspaces.values_mut() {
            generations.previous = std::mem::take(&mut generations.current);
        }
        self.workspaces.retain(|_, generations| generations.previous.iter().any(|owners| !owners.is_empty()));
        self.current = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(value: &str) -> Identity {
        Identity { kind: IdentityKind::UserId, value: value.into() }
    }

    #[test]
    fn remembers_per_workspace_and_kind() {
        let mut cache = IdentityCache::default();
        cache.insert("ws_a", &user("u1"), "prf_1");
        assert_eq!(cache.get("ws_a", &user("u1")).as_deref(), Some("prf_1"));
        assert_eq!(cache.get("ws_b", &user("u1")), None, "another workspace's identity");
        assert_eq!(cache.get("ws_a", &Identity { kind: IdentityKind::AnonymousId, value: "u1".into() }), None);
    }

    #[test]
    fn a_new_owner_replaces_the_old_and_clear_forgets() {
        let mut cache = IdentityCache::default();
        cache.insert("ws_a", &user("u1"), "prf_1");
        cache.insert("ws_a", &user("u1"), "prf_2");
        assert_eq!(cache.get("ws_a", &user("u1")).as_deref(), Some("prf_2"));
        assert_eq!(cache.current, 1);
        cache.clear();
        assert_eq!(cache.get("ws_a", &user("u1")), None);
    }

    #[test]
    fn keeps_recent_identities_within_two_generations() {
        let mut cache = IdentityCache::default();
        cache.insert("ws_a", &user("early"), "prf_early");
        for index in 0..GENERATION - 1 {
            cache.insert("ws_a", &user(&format!("u{index}")), "prf_x");
        }
        // The first generation is full and now the previous one; a hit brings `early` back.
        assert_eq!(cache.get("ws_a", &user("early")).as_deref(), Some("prf_early"));
        for index in 0..GENERATION {
            cache.insert("ws_a", &user(&format!("v{index}")), "prf_y");
        }
        assert_eq!(cache.get("ws_a", &user("u0")), None, "two generations ago: forgotten");
        assert!(cache.current <= GENERATION);
    }
}
