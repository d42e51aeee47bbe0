//! `bench lookup`: profile lookup by identity, in-process, on a store holding many profiles.

#[allow(unused_imports)]
use crate::prelude::*;

/// Settings of the lookup benchmark.
#[derive(clap::Args)]
pub struct LookupArgs {
    /// Profiles to create before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Lookups to measure.
    #[arg(long, default_value_t = 100_000)]
    lookups: usize,
    /// Keep the database here instead of a temporary directory (reused if it exists).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(crate) async fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    use crossline_core::event::{Endpoint, NormalizeOptions, parse_request};
    use crossline_core::{Identity, IdentityKind};
    let temporary = tempfile::Builder::new().prefix("crossline-bench-lookup-").tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_owned());
    let store = crossline_store::sqlite::SqliteStore::open(&dir.join("crossline.db")).await?;
    use crossline_store::{ProfileStore, WorkspaceStore};
    let workspace = match store.workspaces().await?.into_iter().next() {
        Some(workspace) => workspace,
        None => {
            let workspace = crossline_store::Workspace {
                id: crossline_core::ids::new_id("ws"),
                name: "lookup-bench".into(),
                default_region: "US".into(),
                time_zone: "UTC".into(),
                created_at: chrono::Utc::now(),
            };
            store.create_workspace(&workspace, "bench-w", "bench-a").await?;
            workspace
        }
    };
    let existing = store.workspace_stats(&workspace.id, 1).await?.profiles as usize;
    let started = Instant::now();
    let chunk = 2_000; // well under the 500 KB request limit that parse_request enforces
    let mut next = existing;
    while next < args.profiles {
        let end = (next + chunk).min(args.profiles);
        let batch: Vec<Value> = (next..end)
            .map(|index| {
                json!({"type": "identify", "messageId": format!("p{index}"), "userId": format!("user-{index}"),
                "traits": {"email": format!("person{index}@example.com"), "plan": "standard"}})
            })
            .collect();
        let body = json!({"batch": batch}).to_string();
        let options = NormalizeOptions { default_region: "US", received_at: chrono::Utc::now() };
        let request =
            parse_request(Endpoint::Batch, body.as_bytes(), &options).map_err(|err| anyhow::anyhow!("{err}"))?;
        if let Some(rejected) = request.rejected.first() {
            anyhow::bail!("{}", rejected.message);
        }
        let events = request.events;
        store.ingest(&workspace.id, events).await?;
        next = end;
    }
    if args.profiles > existing {
        println!("created {} profiles in {:.1} s", args.profiles - existing, started.elapsed().as_secs_f64());
    }
    let mut rng = StdRng::seed_from_u64(3);
    let mut latencies = Vec::with_capacity(args.lookups);
    for _ in 0..args.lookups {
        let index = rng.random_range(0..args.profiles);
        let identity = if index % 2 == 0 {
            Identity { kind: IdentityKind::Email, value: format!("person{index}@example.com") }
        } else {
            Identity { kind: IdentityKind::UserId, value: format!("user-{index}") }
        };
        let start = Instant::now();
        let profile = store.lookup(&workspace.id, &identity).await?;
        latencies.push(start.elapsed());
        if profile.is_none() {
            bail!("{identity} was not found");
        }
    }
    latencies.sort();
    println!(
        "crossline bench lookup: {} profiles, {} lookups: {}",
        args.profiles,
        args.lookups,
        latency_summary(&latencies, 3),
    );
    Ok(())
}
