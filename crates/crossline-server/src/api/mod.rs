//! The REST API (`/api/v1/*`) and the Segment-compatible tracking API (`/v1/*`).

pub mod agents;
pub mod alexa;
pub mod bots;
pub mod calls;
pub mod channels;
pub mod conversations;
pub mod destinations;
pub mod engage;
pub mod inbox;
pub mod ingest;
pub mod jobs;
pub mod profiles;
pub mod rejected;
pub mod segment_schema;
pub mod users;
pub mod webchat;
pub mod workspaces;
