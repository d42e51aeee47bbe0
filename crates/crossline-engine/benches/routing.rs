//! What a routing decision costs: `plan` over 1,000 waiting conversations in five queues (two with a
//! skill, one with a language, priorities) and 200 available agents, and one pass of
//! `ContactCentre::route` on a real SQLite store holding them (reading the queue, the agents and
//! their load, then taking the conversation for its agent). Run with
//! `cargo bench -p crossline-engine --bench routing`.

use chrono::{Duration, TimeZone, Utc};
use crossline_engine::routing::{QueueSpec, Seat, Waiting, plan};
use divan::Bencher;
use std::collections::HashMap;

fn main() {
    divan::main();
}

const WAITING: usize = 1_000;
const AGENTS: usize = 200;

fn queues() -> HashMap<String, QueueSpec> {
    HashMap::from([
        ("cards".to_owned(), QueueSpec { skills: vec!["cards".into()], priority: 5, ..Default::default() }),
        ("loans".to_owned(), QueueSpec { skills: vec!["loans".into()], priority: 3, ..Default::default() }),
        ("de".to_owned(), QueueSpec { languages: vec!["de".into()], priority: 1, ..Default::default() }),
        ("vip".to_owned(), QueueSpec { skills: vec!["cards".into(), "vip".into()], priority: 9, ..Default::default() }),
    ])
}

fn waiting() -> Vec<Waiting> {
    let start = Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap();
    let names = ["cards", "loans", "de", "vip", "default"];
    (0..WAITING)
        .map(|index| Waiting {
            id: format!("cnv_{index:05}"),
            queue: names[index % names.len()].to_owned(),
            queued_at: start + Duration::seconds(index as i64),
            call: false,
        })
        .collect()
}

/// 200 agents; `free` room each.
fn seats(free: impl Fn(usize) -> u32) -> Vec<Seat> {
    let start = Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).unwrap();
    (0..AGENTS)
        .map(|index| Seat {
            agent_id: format!("agt_{index:03}"),
            skills: match index % 4 {
                0 => vec!["cards".into(), "vip".into()],
                1 => vec!["cards".into()],
                2 => vec!["loans".into()],
                _ => Vec::new(),
            },
            languages: if index % 5 == 0 { vec!["en".into(), "de".into()] } else { vec!["en".into()] },
            free: free(index),
            free_calls: 0,
            idle_since: start + Duration::seconds((index * 7 % AGENTS) as i64),
        })
        .collect()
}

/// One decision at the worst: 1,000 waiting, 200 agents, one seat free — every conversation is
/// looked at against every agent before the one that fits is found.
#[divan::bench]
fn one_decision_1000_waiting_200_agents(bencher: Bencher) {
    let (waiting, queues, now) = (waiting(), queues(), Utc::now());
    bencher
        .with_inputs(|| seats(|index| u32::from(index == AGENTS - 1)))
        .bench_values(|seats| plan(&waiting, &queues, seats, now));
}

/// A whole pass: 1,000 waiting, 200 agents with room for 3 each (600 decisions).
#[divan::bench]
fn full_pass_1000_waiting_200_agents(bencher: Bencher) {
    let (waiting, queues, now) = (waiting(), queues(), Utc::now());
    bencher.with_inputs(|| seats(|_| 3)).bench_values(|seats| plan(&waiting, &queues, seats, now));
}

/// One pass of `ContactCentre::route` on SQLite with 1,000 conversations waiting and 200 available
/// agents who are all full: what every pass pays to read the queue, the agents, their load and the
/// queues' definitions before deciding (a pass that gives a conversation adds one write of it).
#[divan::bench(sample_count = 50)]
fn route_pass_on_sqlite_1000_waiting_200_agents(bencher: Bencher) {
    use crossline_core::ConversationStatus;
    use crossline_store::agents::{Agent, AgentStatus};
    use crossline_store::{Conversation, DynStore, TurnRead};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (centre, workspace) = runtime.block_on(async {
        let store: DynStore =
            std::sync::Arc::new(crossline_store::sqlite::SqliteStore::open(&dir.path().join("bench.db")).await.unwrap());
        let workspace = crossline_store::testsuite::sample_workspace("routing");
        store.create_workspace(&workspace, "w", "a").await.unwrap();
        let bus: crossline_bus::DynBus = std::sync::Arc::new(crossline_bus::memory::MemoryBus::new());
        let recorder = crossline_engine::EventRecorder::new(store.clone(), bus);
        let now = Utc::now();
        for index in 0..WAITING {
            let batch = serde_json::json!({"batch": [{"type": "identify", "userId": format!("c{index}"), "messageId": format!("i{index}")}]});
            let profile = store.ingest(&workspace.id, crossline_store::testsuite::events(batch)).await.unwrap()[0]
                .profile_id
                .clone()
                .unwrap();
            let mut conversation = Conversation::new(format!("cnv_{index:05}"), profile, "bank", 1, "chat", now);
            conversation.status = ConversationStatus::Queued;
            conversation.queue = Some(["cards", "loans", "de", "vip", "default"][index % 5].into());
            conversation.queued_at = Some(now - Duration::seconds((WAITING - index) as i64));
            let read = TurnRead { active_since: now - Duration::minutes(30), open: None };
            store.record_turn(&workspace.id, &conversation, &read, &[], Vec::new()).await.unwrap();
        }
        for (index, seat) in seats(|_| 0).into_iter().enumerate() {
            let agent = Agent {
                id: seat.agent_id,
                name: format!("Agent {index}"),
                email: format!("agent{index}@example.com"),
                skills: seat.skills,
                languages: seat.languages,
                capacity: 1,
                status: AgentStatus::Available,
                created_at: now,
                status_at: now,
                phone: None,
                calls: 0,
            };
            store.create_agent(&workspace.id, &agent, &format!("hash-{index}")).await.unwrap();
        }
        // Every agent holds one conversation already: full.
        let held: Vec<_> = store
            .list_conversations(&workspace.id, &crossline_store::agents::ConversationFilter { statuses: vec![ConversationStatus::Queued], limit: AGENTS, ..Default::default() })
            .await
            .unwrap();
        for (conversation, index) in held.iter().zip(0..) {
            let change = crossline_store::agents::PeopleChange {
                expected_status: ConversationStatus::Queued,
                expected_assignee: None,
                status: ConversationStatus::Assigned,
                assignee: Some(format!("agt_{index:03}")),
                queue: conversation.queue.clone(),
                now,
                delivery: None,
            };
            store.record_people_change(&workspace.id, &conversation.id, &change, &[], Vec::new()).await.unwrap();
        }
        for (name, spec) in queues() {
            let object = crossline_store::engage::EngageObject {
                id: format!("que_{name}"),
                kind: crossline_store::engage::ObjectKind::Queue,
                name,
                body: serde_json::to_value(spec).unwrap(),
                status: "active".into(),
                status_reason: None,
                created_at: now,
                updated_at: now,
            };
            store.put_object(&workspace.id, &object).await.unwrap();
        }
        (crossline_engine::agents::ContactCentre::new(store, recorder), workspace)
    });
    bencher.bench(|| runtime.block_on(centre.route(&workspace.id, Utc::now())).unwrap());
}
