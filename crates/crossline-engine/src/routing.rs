//! Routing: which available agent gets which waiting conversation.
//!
//! The longest-waiting conversation of the most urgent queue goes to the longest-idle available agent
//! who has every skill the queue asks for, speaks one of its languages, and has room under their
//! capacity; then the next, until no conversation or no room is left. [`plan`] decides a pass without
//! touching anything (a pure function, benchmarked); [`crate::agents::ContactCentre::route`] reads the
//! workspace, plans, and takes each conversation for its agent the way an agent takes one (once, so a
//! pass on another node at the same moment cannot give it twice).

use chrono::{DateTime, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A queue's definition (`PUT /api/v1/queues/{name}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Skills an agent must all have to be routed this queue's conversations.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Languages (ISO 639-1) of which an agent must speak one; empty: any agent.
    #[serde(default)]
    pub languages: Vec<String>,
    /// 0–9: conversations of a higher priority queue are routed first.
    #[serde(default)]
    pub priority: u8,
    /// When the queue is staffed; absent: always. Outside them nothing is routed (agents may still
    /// take conversations themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
    /// How long a conversation may wait for its first agent message; past it the breach is recorded
    /// (`conversation.sla_breached`) and the conversation moved to `escalate_to` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_seconds: Option<u32>,
    /// The queue a conversation past `first_response_seconds` moves to (a more senior team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,
    /// How long a customer of a conversation an agent holds may wait for the next answer; past it
    /// the breach is recorded (`conversation.sla_breached`, `kind: "next_response"`), once per wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_response_seconds: Option<u32>,
}

/// Opening hours in a time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// IANA time zone.
    pub time_zone: String,
    /// Open days: `mon` … `sun`.
    pub days: Vec<String>,
    /// Opening time, `HH:MM`.
    pub open: String,
    /// Closing time, `HH:MM` (after `open`).
    pub close: String,
}

/// Most skills or languages a queue names.
const MAX_TAGS: usize = 32;

fn weekday(name: &str) -> Option<Weekday> {
    match name {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

impl QueueSpec {
    /// Check a definition; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fault = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        for (field, tags) in [("skills", &self.skills), ("languages", &self.languages)] {
            if tags.len() > MAX_TAGS {
                return fault(field, "give at most 32");
            }
            if let Some(index) = tags.iter().position(|tag| !crate::agents::valid_tag(tag)) {
                return fault(&format!("{field}[{index}]"), "use 1-64 letters, digits, _ or -");
            }
        }
        if self.priority > 9 {
            return fault("priority", "use 0 (lowest) to 9");
        }
        if self.first_response_seconds.is_some_and(|seconds| !(1..=7 * 24 * 3600).contains(&seconds)) {
            return fault("first_response_seconds", "use 1 to 604800 (a week)");
        }
        if self.next_response_seconds.is_some_and(|seconds| !(1..=7 * 24 * 3600).contains(&seconds)) {
            return fault("next_response_seconds", "use 1 to 604800 (a week)");
        }
        if let Some(target) = &self.escalate_to {
            if !crate::agents::valid_tag(target) {
                return fault("escalate_to", "use 1-64 letters, digits, _ or - (a queue's name)");
            }
            if self.first_response_seconds.is_none() {
                return fault("escalate_to", "needs first_response_seconds: when to escalate");
            }
        }
        if let Some(hours) = &self.business_hours {
            if hours.time_zone.parse::<chrono_tz::Tz>().is_err() {
                return fault("business_hours.time_zone", "use an IANA time zone such as Europe/London");
            }
            if hours.days.is_empty() || hours.days.iter().any(|day| weekday(day).is_none()) {
                return fault("business_hours.days", "list the open days as mon, tue, wed, thu, fri, sat, sun");
            }
            let (open, close) = (hours.open_time(), hours.close_time());
            if open.is_none() {
                return fault("business_hours.open", "use HH:MM");
            }
            if close.is_none() || close <= open {
                return fault("business_hours.close", "use HH:MM, after the opening time");
            }
        }
        Ok(())
    }

    /// Whether an agent with these skills and languages may take the queue's conversations.
    pub fn suits(&self, skills: &[String], languages: &[String]) -> bool {
        self.skills.iter().all(|skill| skills.contains(skill))
            && (self.languages.is_empty() || self.languages.iter().any(|language| languages.contains(language)))
    }

    /// Whether the queue is staffed at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let Some(hours) = &self.business_hours else { return true };
        let (Ok(zone), Some(open), Some(close)) =
            (hours.time_zone.parse::<chrono_tz::Tz>(), hours.open_time(), hours.close_time())
        else {
            return true;
        };
        let local = now.with_timezone(&zone);
        use chrono::Datelike;
        let day = local.weekday();
        hours.days.iter().any(|name| weekday(name) == Some(day)) && local.time() >= open && local.time() < close
    }
}

impl BusinessHours {
    fn open_time(&self) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(&self.open, "%H:%M").ok()
    }

    fn close_time(&self) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(&self.close, "%H:%M").ok()
    }
}

/// A conversation waiting to be routed.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// The conversation.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Since when it waits.
    pub queued_at: DateTime<Utc>,
    /// A call (the customer's last message came by voice): it needs an agent with a call free.
    pub call: bool,
}

/// An available agent as routing sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Seat {
    /// The agent.
    pub agent_id: String,
    /// Their skills.
    pub skills: Vec<String>,
    /// Their languages.
    pub languages: Vec<String>,
    /// Room left: capacity less the conversations (not calls) they hold.
    pub free: u32,
    /// Calls they may take still: their call capacity less the calls they hold.
    pub free_calls: u32,
    /// When they were last given a conversation (or became available): the longest idle goes first.
    pub idle_since: DateTime<Utc>,
}

impl Seat {
    /// Room left for a conversation of this kind.
    fn room(&self, call: bool) -> u32 {
        if call { self.free_calls } else { self.free }
    }

    /// Take room for a conversation of this kind.
    fn take(&mut self, call: bool) {
        let room = if call { &mut self.free_calls } else { &mut self.free };
        *room -= 1;
    }

    /// Whether the agent may take the queue's conversations at all (room aside).
    fn suits(&self, queue: &QueueSpec) -> bool {
        queue.suits(&self.skills, &self.languages)
    }
}

/// One pass: conversations by queue priority (highest first) then wait (longest first), each to the
/// longest-idle seat that fits it and has room of its kind (calls count against an agent's calls,
/// other conversations against their capacity). Conversations of closed queues, and those no seat
/// fits, wait.
/// Returns `(conversation, agent)` pairs in the order decided.
///
/// Which agents suit a queue is worked out once per queue, and a queue whose agents are all full is
/// not looked at again, so a pass over 1,000 waiting conversations and 200 agents costs tens of
/// microseconds however few seats are free (`benches/routing.rs`).
pub fn plan(
    waiting: &[Waiting],
    queues: &HashMap<String, QueueSpec>,
    mut seats: Vec<Seat>,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let default = QueueSpec::default();
    let spec = |name: &str| queues.get(name).unwrap_or(&default);
    // Per queue that has waiting conversations: open or not, its priority, the seats that suit it.
    let mut per_queue: HashMap<&str, (bool, u8, Vec<usize>)> = HashMap::new();
    for conversation in waiting {
        per_queue.entry(conversation.queue.as_str()).or_insert_with(|| {
            let queue = spec(&conversation.queue);
            let suited = (0..seats.len()).filter(|&index| seats[index].suits(queue)).collect();
            (queue.is_open(now), queue.priority, suited)
        });
    }
    let mut order: Vec<(u8, &Waiting)> = waiting
        .iter()
        .filter_map(|conversation| {
            let (open, priority, _) = &per_queue[conversation.queue.as_str()];
            open.then_some((*priority, conversation))
        })
        .collect();
    order.sort_unstable_by(|(priority_a, a), (priority_b, b)| {
        priority_b.cmp(priority_a).then(a.queued_at.cmp(&b.queued_at)).then(a.id.cmp(&b.id))
    });
    let mut room: [u64; 2] = [
        seats.iter().map(|seat| u64::from(seat.free)).sum(),
        seats.iter().map(|seat| u64::from(seat.free_calls)).sum(),
    ];
    let mut full: std::collections::HashSet<(&str, bool)> = std::collections::HashSet::new();
    let mut decided = Vec::new();
    for (_, conversation) in order {
        let kind = usize::from(conversation.call);
        if room == [0, 0] {
            break;
        }
        if room[kind] == 0 || full.contains(&(conversation.queue.as_str(), conversation.call)) {
            continue;
        }
        let suited = &per_queue[conversation.queue.as_str()].2;
        let best = suited.iter().copied().filter(|&index| seats[index].room(conversation.call) > 0).min_by(|&a, &b| {
            seats[a].idle_since.cmp(&seats[b].idle_since).then(seats[a].agent_id.cmp(&seats[b].agent_id))
        });
        match best {
            Some(index) => {
                let seat = &mut seats[index];
                seat.take(conversation.call);
                seat.idle_since = now;
                room[kind] -= 1;
                decided.push((conversation.id.clone(), seat.agent_id.clone()));
            }
            // Seats only fill up during a pass: nobody will suit this queue's next ones of this kind either.
            None => {
                full.insert((conversation.queue.as_str(), conversation.call));
            }
        }
    }
    decided
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, minute, 0).unwrap()
    }

    fn waiting(id: &str, queue: &str, minute: u32) -> Waiting {
        Waiting { id: id.into(), queue: queue.into(), queued_at: at(minute), call: false }
    }

    fn seat(id: &str, skills: &[&str], languages: &[&str], free: u32, idle_minute: u32) -> Seat {
        Seat {
            agent_id: id.into(),
            skills: skills.iter().map(|skill| (*skill).to_owned()).collect(),
            languages: languages.iter().map(|language| (*language).to_owned()).collect(),
            free,
            free_calls: 0,
            idle_since: at(idle_minute),
        }
    }

    #[test]
    fn the_longest_waiting_goes_to_the_longest_idle_agent_who_fits() {
        let queues = HashMap::from([
            ("cards".to_owned(), QueueSpec { skills: vec!["cards".into()], priority: 5, ..Default::default() }),
            ("de".to_owned(), QueueSpec { languages: vec!["de".into()], ..Default::default() }),
        ]);
        let waiting = [
            waiting("c-general-old", "default", 1),
            waiting("c-cards-new", "cards", 9),
            waiting("c-cards-old", "cards", 3),
            waiting("c-german", "de", 2),
        ];
        let seats = vec![
            seat("ann", &["cards"], &["en"], 1, 5),
            seat("ben", &[], &["en", "de"], 2, 0),
            seat("cat", &["cards"], &["en"], 1, 4),
        ];
        let plan = plan(&waiting, &queues, seats, at(10));
        assert_eq!(
            plan,
            [
                ("c-cards-old".to_owned(), "cat".to_owned()),
                ("c-cards-new".to_owned(), "ann".to_owned()),
                ("c-general-old".to_owned(), "ben".to_owned()),
                ("c-german".to_owned(), "ben".to_owned()),
            ],
            "cards first (priority), each to the longest idle who has the skill; then by wait"
        );
    }

    #[test]
    fn closed_queues_and_full_agents_wait() {
        let closed = QueueSpec {
            business_hours: Some(BusinessHours {
                time_zone: "Europe/London".into(),
                days: vec!["mon".into()],
                open: "09:00".into(),
                close: "17:00".into(),
            }),
            ..Default::default()
        };
        assert!(closed.validate().is_ok());
        // 2026-12-07 is a Monday: open at noon in London, closed at 18:00.
        assert!(closed.is_open(at(0)));
        assert!(!closed.is_open(Utc.with_ymd_and_hms(2026, 12, 7, 18, 0, 0).unwrap()));
        let queues = HashMap::from([("night".to_owned(), closed)]);
        let late = Utc.with_ymd_and_hms(2026, 12, 7, 18, 0, 0).unwrap();
        let plan = plan(
            &[waiting("c1", "night", 1), waiting("c2", "default", 2), waiting("c3", "default", 3)],
            &queues,
            vec![seat("ann", &[], &[], 1, 0)],
            late,
        );
        assert_eq!(plan, [("c2".to_owned(), "ann".to_owned())], "the closed queue waits; one seat, one conversation");
    }

    #[test]
    fn calls_go_to_agents_with_a_call_free() {
        let call = |id: &str, minute: u32| Waiting { call: true, ..waiting(id, "default", minute) };
        let mut phone = seat("pat", &[], &[], 2, 0);
        phone.free_calls = 1;
        let chat_only = seat("cy", &[], &[], 3, 1);
        let plan = plan(
            &[call("call-1", 1), call("call-2", 2), waiting("chat-1", "default", 3)],
            &HashMap::new(),
            vec![chat_only, phone],
            at(10),
        );
        assert_eq!(
            plan,
            [("call-1".to_owned(), "pat".to_owned()), ("chat-1".to_owned(), "cy".to_owned())],
            "one call for the agent with a phone (their chat room does not take calls); the second call waits"
        );
    }

    #[test]
    fn bad_queue_definitions_name_their_field() {
        let bad = |spec: QueueSpec| spec.validate().unwrap_err().0;
        assert_eq!(bad(QueueSpec { priority: 10, ..Default::default() }), "priority");
        assert_eq!(bad(QueueSpec { skills: vec!["a b".into()], ..Default::default() }), "skills[0]");
        let hours = |open: &str, close: &str| QueueSpec {
            business_hours: Some(BusinessHours {
                time_zone: "UTC".into(),
                days: vec!["mon".into()],
                open: open.into(),
                close: close.into(),
            }),
            ..Default::default()
        };
        assert_eq!(bad(hours("9am", "17:00")), "business_hours.open");
        assert_eq!(bad(hours("17:00", "09:00")), "business_hours.close");
    }
}
