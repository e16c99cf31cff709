//! `/v1/fleet` against the simulator's ground truth, on the real services: a fleet with devices
//! that drop and come back (and rotations, bot user deletions and the other standard anomalies)
//! is published, `botmeter run` stores it, and two `botmeter serve` instances answer
//! `/v1/fleet?at=…` the same, one from its fleet timeline (rebuilt from ClickHouse, waited for),
//! the other reading ClickHouse for each request (`--no-fleet-timeline`), at several times: a
//! third of the way in (before any drop), right after a drop (inside the grace: `reconnecting`,
//! and with a shorter grace `dropped`), half way (dropped devices), after the comebacks, and at
//! the window's end. Each time, every credential's state, agents online (and what their start
//! events say), endpoints online, last sighting and drop time equal
//! [`simulate::GroundTruth::fleet_at`], and the summary counts them.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use simulate::{generate, ExpectedFleetCredential, FleetConfig, Scenarios};

use crate::support::{self, TestEnv};

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().map(|text| {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .with_timezone(&Utc)
    })
}

/// The report's credentials in the truth's terms.
fn as_expected(report: &Value) -> BTreeMap<String, ExpectedFleetCredential> {
    report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let state = match c["state"].as_str().unwrap() {
                "online" => "online",
                "reconnecting" => "reconnecting",
                "dropped" => "dropped",
                "never_seen" => "never_seen",
                other => panic!("state {other}"),
            };
            let agents_online: Vec<String> = c["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["session_id"].as_str().unwrap().to_owned())
                .collect();
            (
                c["credential_id"].as_str().unwrap().to_owned(),
                ExpectedFleetCredential {
                    state,
                    agents_online,
                    endpoints_online: c["endpoints_online"].as_u64().unwrap(),
                    last_seen_at: time(&c["last_seen_at"]),
                    dropped_at: time(&c["dropped_at"]),
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_equals_the_simulators_truth_at_several_times() {
    let env = TestEnv::new("fleet_status");
    let config = FleetConfig {
        seed: 16,
        users: 2,
        bot_users: 5,
        traffic_events: 4_000,
        scenarios: Scenarios {
            device_drops: 3,
            ..Scenarios::standard()
        },
        ..FleetConfig::default()
    };
    let fleet = generate(&config);
    let truth = &fleet.truth;
    assert!(
        !truth.events.is_empty(),
        "events are recorded: last sightings need them"
    );

    env.create_topics(2).await;
    env.publish(&fleet).await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        truth.traffic_events,
        Duration::from_secs(90),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.control_events", env.database),
        truth.control_events,
        Duration::from_secs(30),
        &mut run,
    )
    .await;
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );

    let (mut first, first_base) = env.serve().await;
    let (mut second, second_base) = env.serve_with(&["--no-fleet-timeline"]).await;
    let http = reqwest::Client::new();
    // The first answers from its timeline once a request without `at` is answered as of an
    // earlier instant (the timeline's refresh) than the request's own.
    let waited = std::time::Instant::now();
    loop {
        let asked = Utc::now().timestamp();
        let body =
            crate::reports_fleet::get_json(&http, &format!("{first_base}/v1/fleet?limit=1")).await;
        if time(&body["at"]).unwrap().timestamp() < asked {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the timeline never answered\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The instants: whole seconds (the API's `at`), around the drops.
    let window = truth.window_end - truth.window_start;
    let share = |percent: i32| (truth.window_start + window * percent / 100).trunc_subsecs(0);
    let grace = chrono::Duration::seconds(300);
    let first_drop = truth
        .fleet
        .values()
        .flat_map(|c| &c.sessions)
        .filter_map(|s| s.stopped_at)
        .filter(|stop| *stop > share(30))
        .min()
        .expect("a device drops");
    let just_after = (first_drop + chrono::Duration::seconds(61)).trunc_subsecs(0);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for (at, grace_seconds) in [
        (share(33), None),
        (just_after, None),
        (just_after, Some(30)),
        (share(50), None),
        (share(80), None),
        (truth.window_end.trunc_subsecs(0), None),
    ] {
        let grace = grace_seconds.map_or(grace, |s| chrono::Duration::seconds(s));
        let expected = truth.fleet_at(at, grace);
        let mut query = format!(
            "/v1/fleet?at={}&limit=10000",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if let Some(seconds) = grace_seconds {
            query.push_str(&format!("&drop_grace_seconds={seconds}"));
        }
        let report = crate::reports_fleet::get_json(&http, &format!("{first_base}{query}")).await;
        let other = crate::reports_fleet::get_json(&http, &format!("{second_base}{query}")).await;
        assert_eq!(
            report, other,
            "{query}: the timeline and a read answer the same"
        );
        let got = as_expected(&report);
        for (id, want) in &expected {
            assert_eq!(got.get(id), Some(want), "{query}: {id}");
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{query}: the credentials listed"
        );
        // What the start events say of each agent online.
        for c in report["credentials"].as_array().unwrap() {
            let id = c["credential_id"].as_str().unwrap();
            for agent in c["agents"].as_array().unwrap() {
                let session = truth.fleet[id]
                    .sessions
                    .iter()
                    .find(|s| s.session_id == agent["session_id"].as_str().unwrap())
                    .unwrap();
                assert_eq!(agent["region"], session.region.as_str(), "{query}: {agent}");
                assert_eq!(agent["os"], session.os.as_str(), "{query}: {agent}");
                assert_eq!(
                    agent["user_agent"],
                    session.user_agent.as_str(),
                    "{query}: {agent}"
                );
            }
        }
        let count = |state: &str| expected.values().filter(|c| c.state == state).count() as u64;
        let summary = &report["summary"];
        for state in ["online", "reconnecting", "dropped", "never_seen"] {
            assert_eq!(
                summary[state].as_u64(),
                Some(count(state)),
                "{query}: {state}"
            );
            *states.entry(state).or_default() += count(state) as usize;
        }
        let agents: usize = expected.values().map(|c| c.agents_online.len()).sum();
        assert_eq!(
            summary["agents_online"].as_u64(),
            Some(agents as u64),
            "{query}"
        );
        eprintln!("{query}: {summary}");
    }
    for state in ["online", "reconnecting", "dropped"] {
        assert!(states[state] > 0, "{state} never seen: {states:?}");
    }

    first.terminate(Duration::from_secs(30));
    second.terminate(Duration::from_secs(30));
    env.drop_database().await;
    support::delete_topics(
        &env.brokers,
        &[
            &env.control_topic,
            &env.traffic_topic,
            &env.dead_letter_topic,
        ],
    )
    .await;
}
