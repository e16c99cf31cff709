//! The alert task of `botmeter run --alert-rules`: every `evaluate_every_seconds`, evaluates the
//! rules against ClickHouse (`query::alerts`), writes the alerts' new states, and delivers every
//! undelivered state to the sinks (the Kafka topic, JSON keyed by alert id; generic JSON
//! webhooks; Alertmanager's `POST /api/v2/alerts`), with retries and doubling backoff. A state is
//! recorded delivered only once every sink took it, so an alert is never lost: what a crash or a
//! down sink left undelivered is delivered by a later evaluation, of this instance or another.
//!
//! One instance of a consumer group evaluates: the one assigned the traffic topic's partition 0
//! (leadership follows Kafka's group assignment; after a SIGKILL, the instance that inherits
//! partition 0 takes over). Around a handover two instances may briefly both evaluate: they
//! compute the same alert ids from the same rows and the table keeps one row per id, so an alert
//! still fires once; a state may then be *delivered* twice (at least once, same `alert_id` and
//! `state`; receivers deduplicate by them, as Alertmanager does by labels).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use query::alerts::{self, Alert, AlertRow, AlertRules};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tracing::{info, warn};

/// Where alerts go, built from the rules file's `[delivery]`.
pub struct Sinks {
    kafka: Option<(FutureProducer, String)>,
    http: reqwest::Client,
    webhook_urls: Vec<String>,
    alertmanager_urls: Vec<String>,
    max_attempts: u32,
    initial_backoff: Duration,
    api_base_url: String,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks")
            .field("kafka_topic", &self.kafka.as_ref().map(|(_, t)| t))
            .field("webhook_urls", &self.webhook_urls)
            .field("alertmanager_urls", &self.alertmanager_urls)
            .finish_non_exhaustive()
    }
}

impl Sinks {
    /// The sinks of `rules`, producing to `brokers`. Builds clients only (no network IO); reads
    /// and checks `delivery.ca_file`.
    pub fn new(rules: &AlertRules, brokers: &str) -> anyhow::Result<Self> {
        let delivery = &rules.delivery;
        let kafka = if delivery.kafka_topic.is_empty() {
            None
        } else {
            let producer: FutureProducer = ingest::client::producer_config(brokers)
                .set("linger.ms", "0")
                .set("message.timeout.ms", delivery.timeout_ms.to_string())
                .create()
                .context("failed to build the alerts' Kafka producer")?;
            Some((producer, delivery.kafka_topic.clone()))
        };
        let mut http =
            reqwest::Client::builder().timeout(Duration::from_millis(delivery.timeout_ms));
        if let Some(path) = &delivery.ca_file {
            for certificate in private_ca(path)? {
                http = http.add_root_certificate(certificate);
            }
        }
        // rustls checks each added certificate here.
        let http = http.build().with_context(|| match &delivery.ca_file {
            Some(path) => format!(
                "alert rules: delivery.ca_file = {:?}: not a valid CA certificate",
                path.display()
            ),
            None => "failed to build the webhook client".to_owned(),
        })?;
        Ok(Self {
            kafka,
            http,
            webhook_urls: delivery.webhook_urls.clone(),
            alertmanager_urls: delivery.alertmanager_urls.clone(),
            max_attempts: delivery.max_attempts,
            initial_backoff: Duration::from_millis(delivery.initial_backoff_ms),
            api_base_url: rules.api_base_url.clone(),
        })
    }

    /// The Kafka topic, if any.
    pub fn kafka_topic(&self) -> Option<&str> {
        self.kafka.as_ref().map(|(_, topic)| topic.as_str())
    }

    /// Delivers one alert state to every sink, each retried with backoff; the first sink that
    /// still fails after its attempts is the error.
    pub async fn deliver(&self, row: &AlertRow) -> anyhow::Result<()> {
        let alert = Alert::from_row(row, &self.api_base_url);
        let body = serde_json::to_vec(&alert).context("serialize the alert")?;
        if let Some((producer, topic)) = &self.kafka {
            self.retry(&format!("kafka topic {topic}"), || async {
                producer
                    .send(
                        FutureRecord::to(topic).key(&alert.alert_id).payload(&body),
                        Duration::from_secs(0),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| anyhow::Error::from(e))
            })
            .await?;
        }
        for url in &self.webhook_urls {
            self.retry(url, || self.post(url, body.clone())).await?;
        }
        if !self.alertmanager_urls.is_empty() {
            let body = serde_json::to_vec(&[alertmanager_alert(&alert)])
                .context("serialize the Alertmanager alert")?;
            for base in &self.alertmanager_urls {
                let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
                self.retry(&url, || self.post(&url, body.clone())).await?;
            }
        }
        Ok(())
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "answered {status}");
        Ok(())
    }

    async fn retry<F, Fut>(&self, sink: &str, mut attempt: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut backoff = self.initial_backoff;
        for n in 1..=self.max_attempts {
            match attempt().await {
                Ok(()) => return Ok(()),
                Err(e) if n < self.max_attempts => {
                    warn!(
                        sink,
                        attempt = n,
                        error = format!("{e:#}"),
                        "alert delivery failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(e) => {
                    return Err(e.context(format!("alert delivery to {sink} failed {n} times")))
                }
            }
        }
        unreachable!("max_attempts is at least 1 (checked when the rules are loaded)")
    }
}

/// The certificates of `delivery.ca_file` (PEM): an error naming the field and the path when the
/// file cannot be read or holds no PEM certificate.
fn private_ca(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let field = || format!("alert rules: delivery.ca_file = {:?}", path.display());
    let pem = std::fs::read(path).with_context(|| format!("{}: cannot read it", field()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{}: not PEM certificates", field()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
        field()
    );
    Ok(certificates)
}

/// The Alertmanager v2 form of an alert: labels identify it (alertname = rule), annotations
/// describe it, `endsAt` is set once resolved.
pub fn alertmanager_alert(alert: &Alert) -> serde_json::Value {
    let mut value = json!({
        "labels": {
            "alertname": alert.rule,
            "kind": alert.kind,
            "alert_id": alert.alert_id,
            "owner_id": alert.owner_id,
            "credential_id": alert.credential_id,
            "source": "botmeter",
        },
        "annotations": {
            "summary": format!("{} for owner {:?} credential {:?}: {} events, {} bytes", alert.kind, alert.owner_id, alert.credential_id, alert.evidence.events, alert.evidence.bytes),
            "first_seen": alert.evidence.first_seen,
            "last_seen": alert.evidence.last_seen,
            "evidence": alert.links.evidence,
        },
        "startsAt": alert.fired_at,
        "generatorURL": alert.links.alert,
    });
    if let Some(resolved_at) = &alert.resolved_at {
        value["endsAt"] = json!(resolved_at);
    }
    value
}

/// Unix seconds and microseconds now.
fn now() -> (u32, u64) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        u32::try_from(since.as_secs()).unwrap_or(u32::MAX),
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX),
    )
}

/// One evaluation: reads the state, evaluates every rule, writes new states, delivers what is
/// undelivered (oldest version first, so a firing state goes out before its resolution) and
/// records each delivery. Returns how many states were delivered.
pub async fn evaluate_once(
    client: &clickhouse::Client,
    fleet: &query::AppState,
    rules: &AlertRules,
    sinks: &Sinks,
) -> anyhow::Result<usize> {
    let (now_secs, now_us) = now();
    let lookback = u32::try_from(rules.lookback_seconds).unwrap_or(u32::MAX);
    let mut known = alerts::load_state(client, now_secs.saturating_sub(lookback)).await?;
    let mut written = Vec::new();
    for rule in &rules.rules {
        written.extend(
            alerts::evaluate_rule(
                client,
                fleet,
                rules.loaded_plan.as_ref(),
                rule,
                rules.lookback_seconds,
                now_secs,
                now_us,
                &known,
            )
            .await
            .with_context(|| format!("evaluate rule {:?}", rule.name))?,
        );
    }
    alerts::write_alerts(client, &written).await?;
    for row in &written {
        info!(alert_id = %row.alert_id, rule = %row.rule, state = %row.state, owner_id = %row.owner_id, credential_id = %row.credential_id, events = row.events, "alert state");
    }
    // The newest version of each id.
    known.retain(|k| !written.iter().any(|w| w.alert_id == k.alert_id));
    known.extend(written);
    let mut pending: Vec<AlertRow> = known.into_iter().filter(|a| a.delivered == 0).collect();
    pending.sort_by_key(|a| a.version);
    let mut delivered = 0;
    for row in pending {
        if let Err(e) = sinks.deliver(&row).await {
            warn!(alert_id = %row.alert_id, state = %row.state, error = format!("{e:#}"), "alert not delivered; retried at the next evaluation");
            continue;
        }
        let record = AlertRow {
            delivered: 1,
            version: row.version + 1,
            ..row
        };
        alerts::write_alerts(client, std::slice::from_ref(&record)).await?;
        metrics::counter!("botmeter_alerts_delivered_total", "state" => record.state.clone())
            .increment(1);
        delivered += 1;
    }
    Ok(delivered)
}

/// Evaluates and delivers until `stop`; an evaluation that fails is logged and retried at the
/// next tick (alerts are read back from ClickHouse, so nothing is lost meanwhile).
pub async fn run(
    client: clickhouse::Client,
    fleet: query::AppState,
    rules: Arc<AlertRules>,
    sinks: Sinks,
    leader: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let every = Duration::from_secs(rules.evaluate_every_seconds);
    info!(
        rules = rules.rules.len(),
        every_seconds = rules.evaluate_every_seconds,
        kafka_topic = sinks.kafka_topic().unwrap_or(""),
        webhooks = sinks.webhook_urls.len(),
        alertmanagers = sinks.alertmanager_urls.len(),
        "alert evaluation started"
    );
    let mut leading = false;
    while !stop.load(Ordering::SeqCst) {
        let started = tokio::time::Instant::now();
        if leader.load(Ordering::SeqCst) != leading {
            leading = !leading;
            info!(
                leading,
                "alert evaluation leadership (traffic partition 0) changed"
            );
            metrics::gauge!("botmeter_alerts_leader").set(if leading { 1.0 } else { 0.0 });
        }
        if !leading {
            tokio::time::sleep_until(started + every).await;
            continue;
        }
        if let Err(e) = evaluate_once(&client, &fleet, &rules, &sinks).await {
            warn!(
                error = format!("{e:#}"),
                "alert evaluation failed; retried at the next tick"
            );
        }
        tokio::time::sleep_until(started + every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sinks_with_ca(path: &std::path::Path) -> anyhow::Result<Sinks> {
        let rules = AlertRules::parse(&format!(
            "[delivery]\nkafka_topic = \"\"\nwebhook_urls = [\"https://127.0.0.1:1/hook\"]\nca_file = {:?}\n[[rules]]\nname = \"a\"\nkind = \"acl_violation\"\n",
            path.to_str().unwrap()
        ))?;
        Sinks::new(&rules, "127.0.0.1:9092")
    }

    #[test]
    fn a_bad_ca_file_is_refused_naming_the_field_and_path() {
        let dir = std::env::temp_dir().join(format!("botmeter-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let bad_der = dir.join("bad.pem");
        std::fs::write(
            &bad_der,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (path, why) in [
            (&missing, "cannot read"),
            (&not_pem, "no PEM certificate"),
            (&bad_der, "not a valid CA certificate"),
        ] {
            let message = format!("{:#}", sinks_with_ca(path).unwrap_err());
            assert!(
                message.contains("delivery.ca_file")
                    && message.contains(path.to_str().unwrap())
                    && message.contains(why),
                "{message}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn alertmanager_form_has_labels_annotations_and_ends_once_resolved() {
        let row = AlertRow {
            alert_id: "al_1".into(),
            rule: "revoked".into(),
            kind: "revoked_credential_used".into(),
            state: "firing".into(),
            owner_id: "bot_a".into(),
            credential_id: "cr_a".into(),
            events: 3,
            bytes: 30,
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_010,
            last_ingested: 1_700_000_011,
            fired_at: 1_700_000_012,
            resolved_at: 0,
            delivered: 0,
            version: 1,
        };
        let firing = alertmanager_alert(&Alert::from_row(&row, "http://api:8080/"));
        assert_eq!(firing["labels"]["alertname"], "revoked");
        assert_eq!(firing["labels"]["alert_id"], "al_1");
        assert_eq!(firing["startsAt"], "2023-11-14T22:13:32Z");
        assert_eq!(
            firing["generatorURL"],
            "http://api:8080/v1/alerts?alert_id=al_1"
        );
        assert!(firing.get("endsAt").is_none());
        let resolved = AlertRow {
            state: "resolved".into(),
            resolved_at: 1_700_000_100,
            ..row
        };
        let resolved = alertmanager_alert(&Alert::from_row(&resolved, "http://api:8080"));
        assert_eq!(resolved["endsAt"], "2023-11-14T22:15:00Z");
    }
}
