//! The `botmeter_alerts_firing{rule, kind}` gauge's figures (`refresh_alert_gauges`) against
//! ClickHouse 18.16: read from the `alerts` table, the newest version of each alert counted,
//! one entry per rule with any alert, 0 once all of its alerts resolved.

use std::collections::BTreeMap;

use botmeter_query::alerts::{write_alerts, AlertRow};
use botmeter_query::api::refresh_alert_gauges;

use crate::common::TestDb;

fn alert(id: &str, rule: &str, kind: &str, state: &str, version: u64) -> AlertRow {
    AlertRow {
        alert_id: id.to_owned(),
        rule: rule.to_owned(),
        kind: kind.to_owned(),
        state: state.to_owned(),
        owner_id: "bot_a".to_owned(),
        credential_id: "cr_a".to_owned(),
        events: 1,
        bytes: 10,
        first_seen: 1_714_550_400,
        last_seen: 1_714_550_400,
        last_ingested: 1_714_550_400,
        fired_at: 1_714_550_460,
        resolved_at: if state == "resolved" {
            1_714_550_760
        } else {
            0
        },
        delivered: 1,
        version,
    }
}

fn figures(pairs: &[(&str, &str, u64)]) -> BTreeMap<(String, String), u64> {
    pairs
        .iter()
        .map(|(rule, kind, n)| (((*rule).to_owned(), (*kind).to_owned()), *n))
        .collect()
}

#[tokio::test]
async fn the_gauge_counts_the_newest_state_of_each_alert_per_rule() {
    let db = TestDb::migrated("alert_gauges").await;
    let state = db.state();
    let client = db.client();
    assert_eq!(
        refresh_alert_gauges(&state).await.unwrap().firing,
        BTreeMap::new(),
        "no alerts: no series"
    );
    // Two credentials firing on `revoked`, one of which resolves in a later version; one device
    // dropped and resolved; an undelivered firing version after a delivered one (same state).
    write_alerts(
        &client,
        &[
            alert("al_1", "revoked", "revoked_credential_used", "firing", 10),
            alert("al_2", "revoked", "revoked_credential_used", "firing", 11),
            alert("al_3", "devices", "device_dropped", "firing", 12),
            alert("al_3", "devices", "device_dropped", "resolved", 20),
            alert("al_4", "spikes", "unattributed_spike", "firing", 13),
            alert("al_4", "spikes", "unattributed_spike", "firing", 14),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        refresh_alert_gauges(&state).await.unwrap().firing,
        figures(&[
            ("devices", "device_dropped", 0),
            ("revoked", "revoked_credential_used", 2),
            ("spikes", "unattributed_spike", 1),
        ])
    );
    // al_1 resolves: its newest version wins, even before the parts merge.
    write_alerts(
        &client,
        &[alert(
            "al_1",
            "revoked",
            "revoked_credential_used",
            "resolved",
            30,
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        refresh_alert_gauges(&state).await.unwrap().firing,
        figures(&[
            ("devices", "device_dropped", 0),
            ("revoked", "revoked_credential_used", 1),
            ("spikes", "unattributed_spike", 1),
        ])
    );
}
