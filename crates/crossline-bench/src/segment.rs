//! `bench segment`: a segment's size over many profiles and events, in-process on the real
//! SQLite store (the shape: a trait, an event count in a 30-day window, email consent),
//! and how long one profile's membership takes to re-evaluate (what an arriving event costs).

#[allow(unused_imports)]
use crate::prelude::*;

/// Settings of the segment benchmark.
#[derive(clap::Args)]
pub struct SegmentArgs {
    /// Profiles to create before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Track events spread over them (over the last 90 days, five event names).
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Size evaluations to measure.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Keep the database here instead of a temporary directory (reused if it exists).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const NAMES: [&str; 5] = ["Order Completed", "Product Viewed", "Cart Abandoned", "Signed In", "Email Opened"];

pub(crate) async fn segment(args: SegmentArgs) -> anyhow::Result<()> {
    use crossline_core::event::{Endpoint, NormalizeOptions, parse_request};
    use crossline_core::segment::Filter;
    use crossline_store::{EngageStore, ProfileStore, WorkspaceStore};
    let temporary = tempfile::Builder::new().prefix("crossline-bench-segment-").tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_owned());
    let store = crossline_store::sqlite::SqliteStore::open(&dir.join("crossline.db")).await?;
    let workspace = match store.workspaces().await?.into_iter().next() {
        Some(workspace) => workspace,
        None => {
            let workspace = crossline_store::Workspace {
                id: crossline_core::ids::new_id("ws"),
                name: "segment-bench".into(),
                default_region: "US".into(),
                time_zone: "UTC".into(),
                created_at: chrono::Utc::now(),
            };
            store.create_workspace(&workspace, "bench-w", "bench-a").await?;
            workspace
        }
    };
    let stats = store.workspace_stats(&workspace.id, 1).await?;
    let now = chrono::Utc::now();
    let ingest = |batch: Vec<Value>| {
        let body = json!({"batch": batch}).to_string();
        let options = NormalizeOptions { default_region: "US", received_at: now };
        parse_request(Endpoint::Batch, body.as_bytes(), &options).map_err(|err| anyhow::anyhow!("{err}"))
    };
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(12);
    // Profiles: a plan trait (a third "pro"), an email, consent for half of them.
    let mut next = stats.profiles as usize;
    while next < args.profiles {
        let end = (next + 2_000).min(args.profiles);
        let batch = (next..end)
            .map(|index| {
                let plan = ["pro", "standard", "free"][index % 3];
                let mut event = json!({"type": "identify", "messageId": format!("p{index}"), "userId": format!("user-{index}"),
                    "traits": {"email": format!("person{index}@example.com"), "plan": plan, "age": 18 + index % 60}});
                if index % 2 == 0 {
                    event["traits"]["consent"] = json!({"email": "subscribed"});
                } else if index % 7 == 1 {
                    event["traits"]["consent"] = json!({"email": "unsubscribed"});
                }
                event
            })
            .collect();
        store.ingest(&workspace.id, ingest(batch)?.events).await?;
        next = end;
    }
    let have = store.workspace_stats(&workspace.id, 1).await?.events as usize;
    let wanted = args.profiles + args.events;
    let mut made = have;
    while made < wanted {
        let end = (made + 2_000).min(wanted);
        let batch = (made..end)
            .map(|index| {
                let who = rng.random_range(0..args.profiles);
                let age = chrono::Duration::seconds(rng.random_range(0..90 * 86_400));
                json!({"type": "track", "messageId": format!("e{index}"), "userId": format!("user-{who}"),
                    "event": NAMES[rng.random_range(0..NAMES.len())], "properties": {"total": rng.random_range(1..200)},
                    "timestamp": (now - age).to_rfc3339()})
            })
            .collect();
        store.ingest(&workspace.id, ingest(batch)?.events).await?;
        made = end;
        if made % 1_000_000 < 2_000 {
            println!("  {made} events stored ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    if wanted > have {
        println!(
            "created {} profiles and {} events in {:.1} s",
            args.profiles,
            args.events,
            started.elapsed().as_secs_f64()
        );
    }
    let filter = Filter::parse(&json!({"all": [
        {"trait": "plan", "op": "eq", "value": "pro"},
        {"event": "Order Completed", "count": {"gte": 2}, "within_days": 30},
        {"reachable": "email"}
    ]}))?;
    let mut sizes = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..args.rounds {
        let start = Instant::now();
        let size = store.segment_size(&workspace.id, &filter, chrono::Utc::now()).await?;
        latencies.push(start.elapsed());
        sizes.push(size);
    }
    latencies.sort();
    println!(
        "crossline bench segment: {} profiles, {} events, size {} (trait + Order Completed ≥ 2 in 30 days + reachable by email): {}",
        args.profiles,
        args.events,
        sizes[0],
        latency_summary(&latencies, 0)
    );
    // One profile re-evaluated as an arriving event asks (what the engagement listener does: read
    // the profile, its newest events, its address states and lists, evaluate in memory).
    let mut one = Vec::new();
    for round in 0..200 {
        let id = format!("user-{}", (round * 7919) % args.profiles);
        let identity = crossline_core::Identity { kind: crossline_core::IdentityKind::UserId, value: id };
        let start = Instant::now();
        let profile = store.lookup(&workspace.id, &identity).await?.context("a bench profile")?;
        let query = crossline_store::EventQuery { limit: crossline_engage::evaluate::EVENT_WINDOW, kind: None };
        let events = store.events(&workspace.id, &profile.id, &query).await?;
        let unreachable = store.address_states(&workspace.id, &profile.id).await?;
        let lists = store.memberships(&workspace.id, &profile.id).await?;
        let facts = crossline_engage::evaluate::Facts {
            profile: &profile,
            events: &events,
            unreachable: &unreachable,
            lists: &lists,
            now: chrono::Utc::now(),
        };
        std::hint::black_box(crossline_engage::evaluate::matches(&filter, &facts));
        one.push(start.elapsed());
    }
    one.sort();
    println!(
        "crossline bench segment: one profile's membership re-evaluated (read + evaluate): {}",
        latency_summary(&one, 2)
    );
    Ok(())
}
