//! SQL for the PostgreSQL backend. Batch questions are answered with one statement each.

use crate::ingest::{BatchWrites, EventRow, IngestTx};
use crate::postgres::Prepared;
use crate::stats::{fill_days, window_start};
use crate::{
    EnqueueOutcome, EventQuery, Job, JobStatus, NewJob, ProfilePage, ProfileQuery, StoreError, StoreResult,
    StoredEvent, Workspace, WorkspaceStats, from_millis, to_millis,
};
use chrono::{DateTime, Utc};
use crossline_core::consent::Consent;
use crossline_core::profile::ProfileState;
use crossline_core::{ConsentStatus, Identity, IdentityKind, Profile};
use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

mod bots;
mod conversations;
mod ingest;
mod jobs;
mod profiles;
mod rejected;
mod workspaces;

pub(in crate::postgres) use bots::*;
pub(in crate::postgres) use conversations::*;
pub(in crate::postgres) use ingest::*;
pub(in crate::postgres) use jobs::*;
pub(in crate::postgres) use profiles::*;
pub(in crate::postgres) use rejected::*;
pub(in crate::postgres) use workspaces::*;
