//! Language understanding for Crossline: intents, out-of-scope detection, slots, sentiment, language.
//!
//! Invariant: this crate does no IO of any kind. Time comes in as a parameter.

pub mod classifier;
pub mod entities;
pub mod features;
pub mod intent;
pub mod numbers;
pub mod temporal;
pub mod text;
