//! Domain types and pure rules of Crossline.
//!
//! **Invariant:** this crate knows nothing of SQL, HTTP or tokio. Everything here is a pure function
//! of its inputs (time is always passed in), so the storage backends and the server share one
//! definition of what an identity, an event, a profile and a merge are.

pub mod consent;
pub mod conversation;
pub mod event;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod profile;
pub mod segment;
pub mod trust;

pub use consent::{Consent, ConsentEntry, ConsentStatus};
pub use conversation::{Author, ConversationStatus};
pub use event::{EventKind, EventValidationError, NormalizedEvent, RejectedEvent, SegmentRequest};
pub use identity::{Identity, IdentityError, IdentityKind};
pub use profile::{Profile, ProfileState};
