//! Representatives and queues: configuration checks and the pure
//! assignment logic (strategies, availability, sticky follow-ups).

use std::collections::HashMap;

use switchboard::decide::assign::{Target, TeamFacts, assign, loads_needed, route_target};

use crate::common::Setup;

const TEAM: &str = r#"
[[queue]]
name = "sales"
folder = "Queues/Sales"
strategy = "round_robin"
members = ["ann", "ben", "cat"]

[[queue]]
name = "returns"
folder = "Queues/Returns"
strategy = "least_loaded"
escalate_after = 2

[[rep]]
id = "ann"
folder = "Reps/Ann"
queues = ["returns"]

[[rep]]
id = "ben"
folder = "Reps/Ben"
queues = ["returns"]

[[rep]]
id = "cat"
name = "Cat"
folder = "Reps/Cat"
"#;

fn facts() -> TeamFacts {
    TeamFacts {
        now: 1_795_000_000_000,
        ..Default::default()
    }
}

#[test]
fn round_robin_is_exactly_fair_and_skips_the_unavailable() {
    let s = Setup::new(TEAM);
    let k = s.knowledge();
    let target = Target::Queue("sales".into());
    let mut f = facts();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..300 {
        let a = assign(&k, &target, None, &f);
        *counts.entry(a.rep.clone().unwrap()).or_default() += 1;
        f.rotation.insert("sales".into(), a.rotation.unwrap());
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");

    // Ben away: ann and cat alternate; nobody else is touched.
    f.away.insert("ben".into(), i64::MAX);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let a = assign(&k, &target, None, &f);
        assert!(a.why.contains("skipped: away") || a.rep.as_deref() != Some("ben"));
        seen.push(a.rep.clone().unwrap());
        f.rotation.insert("sales".into(), a.rotation.unwrap());
    }
    assert!(!seen.contains(&"ben".to_string()));
    assert_eq!(seen.iter().filter(|r| *r == "ann").count(), 2, "{seen:?}");

    // Everyone away: the shared folder, never lost.
    f.away.insert("ann".into(), i64::MAX);
    f.away.insert("cat".into(), f.now + 60_000);
    let a = assign(&k, &target, None, &f);
    assert_eq!(a.rep, None);
    assert_eq!(a.folder, "Queues/Sales");
    assert!(a.why.contains("nobody in sales is available"), "{}", a.why);
}

#[test]
fn least_loaded_picks_the_emptiest_folder_and_members_come_from_reps() {
    let s = Setup::new(TEAM);
    let k = s.knowledge();
    assert_eq!(k.queues["returns"].members, ["ann", "ben"]);
    let target = Target::Queue("returns".into());
    assert_eq!(loads_needed(&k, &target, None), ["ann", "ben"]);
    let mut f = facts();
    f.loads.insert("ann".into(), 7);
    f.loads.insert("ben".into(), 2);
    let a = assign(&k, &target, None, &f);
    assert_eq!(a.rep.as_deref(), Some("ben"));
    assert_eq!(a.folder, "Reps/Ben");
    assert!(a.why.contains("least loaded"), "{}", a.why);
    f.loads.insert("ben".into(), 9);
    assert_eq!(assign(&k, &target, None, &f).rep.as_deref(), Some("ann"));
}

#[test]
fn sticky_follow_ups_and_direct_routes() {
    let s = Setup::new(TEAM);
    let k = s.knowledge();
    let f = facts();
    // The conversation's owner gets the follow-up even when it is not
    // their turn, in any queue.
    let a = assign(
        &k,
        &Target::Queue("sales".into()),
        Some(("cat", "SB-7")),
        &f,
    );
    assert_eq!(a.rep.as_deref(), Some("cat"));
    assert!(a.why.contains("follow-up in SB-7"), "{}", a.why);
    assert_eq!(a.rotation, None, "a follow-up does not use up a turn");
    // Owner away: the queue's strategy decides, and the audit says why.
    let mut away = facts();
    away.away.insert("cat".into(), i64::MAX);
    let a = assign(
        &k,
        &Target::Queue("sales".into()),
        Some(("cat", "SB-7")),
        &away,
    );
    assert_ne!(a.rep.as_deref(), Some("cat"));
    assert!(a.why.contains("Cat has SB-7 but is away"), "{}", a.why);
    // Cat is only listed in sales' members: she serves sales, and when she
    // is away a message routed to her goes to the sales rotation.
    assert!(k.reps["cat"].serves("sales"));
    let a = assign(&k, &route_target(&k, "cat"), None, &away);
    assert_eq!(a.queue, "sales");
    assert!(matches!(a.rep.as_deref(), Some("ann" | "ben")), "{a:?}");
    // route = "ben" goes straight to Ben.
    assert_eq!(route_target(&k, "ben"), Target::Rep("ben".into()));
    let a = assign(&k, &route_target(&k, "ben"), None, &f);
    assert_eq!(
        (a.rep.as_deref(), a.folder.as_str()),
        (Some("ben"), "Reps/Ben")
    );
}

#[test]
fn working_hours_and_max_open() {
    let rules = r#"
[[queue]]
name = "night"
folder = "Queues/Night"
strategy = "round_robin"

[[rep]]
id = "owl"
queues = ["night"]
hours = ["Daily 22:00-06:00"]
timezone = "UTC"

[[rep]]
id = "lark"
queues = ["night"]
hours = ["Mon-Fri 06:00-14:00"]
timezone = "Asia/Tokyo"
max_open = 2
"#;
    let s = Setup::new(rules);
    let k = s.knowledge();
    assert_eq!(k.reps["owl"].folder, "Reps/owl");
    let t = Target::Queue("night".into());
    let at = |iso: &str| iso.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    // Monday 23:30 UTC = Tuesday 08:30 in Tokyo: both on duty.
    let mut f = TeamFacts {
        now: at("2026-11-23T23:30:00Z"),
        ..Default::default()
    };
    assert_eq!(loads_needed(&k, &t, None), ["lark"]);
    f.loads.insert("lark".into(), 1);
    let mut got = vec![];
    for _ in 0..2 {
        let a = assign(&k, &t, None, &f);
        got.push(a.rep.clone().unwrap());
        f.rotation.insert("night".into(), a.rotation.unwrap());
    }
    got.sort();
    assert_eq!(got, ["lark", "owl"]);
    // Lark full.
    f.loads.insert("lark".into(), 2);
    for _ in 0..3 {
        let a = assign(&k, &t, None, &f);
        assert_eq!(a.rep.as_deref(), Some("owl"));
        f.rotation.insert("night".into(), a.rotation.unwrap());
    }
    // Monday 12:00 UTC: owl asleep, lark done for the day in Tokyo (21:00).
    let f = TeamFacts {
        now: at("2026-11-23T12:00:00Z"),
        ..Default::default()
    };
    let a = assign(&k, &t, None, &f);
    assert_eq!(a.rep, None);
    assert_eq!(a.folder, "Queues/Night");
    assert!(a.why.contains("outside working hours"), "{}", a.why);
}

#[test]
fn team_mistakes_are_reported_with_positions() {
    let rules = r#"
[[queue]]
name = "sales"
folder = "Queues/Sales"
strategy = "round_robbin"
members = ["anne"]
escalate_after = 0

[[rep]]
id = "ann"
queues = ["sale"]
hours = ["Mon-Fry 09:00-17:00", "Sat 9-12"]
timezone = "Europe/Londn"
max_open = -1
shift = "early"

[[rep]]
id = "support"

[[rule]]
name = "to-bob"
when = { subject = { contains = "bob" } }
route = "bob"
"#;
    let s = Setup::new(rules);
    let Err(d) = switchboard::knowledge::Knowledge::load(&s.config()) else {
        panic!("expected errors");
    };
    let text = d.to_string();
    let file = s.path("rules/00-rules.toml");
    let file = file.display();
    for (line_col, what) in [
        ("14:12", "unknown strategy \"round_robbin\""),
        (
            "15:12",
            "lists member \"anne\", which is not defined: add a [[rep]] with id = \"anne\"; did you mean \"ann\"?",
        ),
        ("16:18", "escalate_after must be a positive number"),
        ("20:11", "serves queue \"sale\", which is not defined"),
        ("21:10", "\"fry\" is not a day"),
        ("21:33", "\"9\" is not a time"),
        ("22:12", "unknown time zone \"Europe/Londn\""),
        ("23:12", "max_open must be a positive number"),
        ("24:1", "unknown key `shift` in rep \"ann\""),
        ("26:1", "rep id \"support\" is also the name of the queue"),
        ("32:9", "\"bob\" is neither a queue nor a rep"),
    ] {
        let needle = format!("{file}:{line_col}: ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&needle) && l.contains(what)),
            "missing {needle}{what} in:\n{text}"
        );
    }
}

#[test]
fn empty_hours_are_an_error_not_a_silent_never() {
    let s = Setup::new("[[rep]]\nid = \"zed\"\nhours = []\n");
    let Err(d) = switchboard::knowledge::Knowledge::load(&s.config()) else {
        panic!("expected an error");
    };
    assert!(d.to_string().contains("`hours` is empty"), "{d}");
}
