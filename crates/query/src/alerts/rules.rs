//! The alert rules file (`botmeter run --alert-rules`, TOML): which rules are evaluated, how often,
//! and where alerts are delivered. [`AlertRules::parse`] checks everything before any IO; every
//! error names the rule, the field and the value. `deploy/alert-rules.example.toml` is a
//! commented example.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

/// Default seconds between two evaluations.
pub const DEFAULT_EVALUATE_EVERY_SECONDS: u64 = 1;
/// Default seconds of evidence read back (by ingestion time).
pub const DEFAULT_LOOKBACK_SECONDS: u64 = 3600;
/// Default seconds without new evidence after which a firing alert resolves.
pub const DEFAULT_RESOLVE_AFTER_SECONDS: u64 = 300;
/// Default Kafka topic alerts are published to.
pub const DEFAULT_KAFKA_TOPIC: &str = "botmeter.alerts";

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Traffic on a credential that was deleted (flag `credential_deleted`).
    RevokedCredentialUsed,
    /// Traffic binding a hostname the credential's ACL does not allow (flag `acl_violation`).
    AclViolation,
    /// Traffic on a credential whose owner is inactive or deleted (flags `owner_inactive`,
    /// `owner_deleted`).
    InactiveOwnerUsed,
    /// Unattributed bytes (in + out) over `threshold_bytes` in an interval of `interval_seconds`
    /// (by event time).
    UnattributedSpike,
    /// A credential that had an agent online and has had none for longer than
    /// `drop_grace_seconds`, as `/v1/fleet` classifies it (`dropped`); resolved once it is not
    /// dropped any more (an agent is back, or the credential was deleted).
    DeviceDropped,
    /// The account's month-end projection of `metric` (as `/v1/overage` makes it, with the
    /// file's `plan`) over the plan's included amount; resolved once it is not any more.
    OverageForecast,
    /// An owner's attributed bytes out in one UTC hour (by event time) over `factor` × the
    /// median of its hours with usage among the `trailing_hours` before it, and over
    /// `min_bytes_out`.
    UsageSpike,
}

impl RuleKind {
    /// The kind as spelled in the rules file and in alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RevokedCredentialUsed => "revoked_credential_used",
            Self::AclViolation => "acl_violation",
            Self::InactiveOwnerUsed => "inactive_owner_used",
            Self::UnattributedSpike => "unattributed_spike",
            Self::DeviceDropped => "device_dropped",
            Self::OverageForecast => "overage_forecast",
            Self::UsageSpike => "usage_spike",
        }
    }

    /// Whether alerts of this kind describe a condition that holds now (a device dropped, a
    /// projection over quota), resolved as soon as it does not, rather than evidence that
    /// arrives and then stops.
    pub fn is_condition(self) -> bool {
        matches!(self, Self::DeviceDropped | Self::OverageForecast)
    }

    /// The usage flags that are evidence for a flag rule (empty for `unattributed_spike`).
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Self::RevokedCredentialUsed => &["credential_deleted"],
            Self::AclViolation => &["acl_violation"],
            Self::InactiveOwnerUsed => &["owner_inactive", "owner_deleted"],
            Self::UnattributedSpike
            | Self::DeviceDropped
            | Self::OverageForecast
            | Self::UsageSpike => &[],
        }
    }
}

/// Default `trailing_hours` of a `usage_spike` rule.
pub const DEFAULT_SPIKE_TRAILING_HOURS: u64 = 24;
/// Largest `trailing_hours` of a `usage_spike` rule (7 days): an evaluation's query time grows
/// with it (BENCHMARKS.md: about 0.1 s at 24 hours, 0.5 s at 168, seconds at 720, for 2,000
/// active owners), and it runs every `evaluate_every_seconds`.
pub const MAX_SPIKE_TRAILING_HOURS: u64 = 168;

/// One rule, as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name; part of every alert's id and labels.
    pub name: String,
    /// What it watches.
    pub kind: RuleKind,
    /// Seconds without new evidence after which a firing alert resolves.
    #[serde(default = "default_resolve_after")]
    pub resolve_after_seconds: u64,
    /// `unattributed_spike` only: the interval bytes are summed over.
    #[serde(default)]
    pub interval_seconds: Option<u64>,
    /// `unattributed_spike` only: bytes (in + out) in one interval above which it fires.
    #[serde(default)]
    pub threshold_bytes: Option<u64>,
    /// `device_dropped` only: seconds without an agent online before a credential is dropped
    /// (default 300, like `botmeter serve --fleet-drop-grace-seconds`).
    #[serde(default)]
    pub drop_grace_seconds: Option<u64>,
    /// `overage_forecast` only: the plan's metric (`bytes_out`, `http_requests`, …).
    #[serde(default)]
    pub metric: Option<String>,
    /// `usage_spike` only (required): k, the multiple of the owner's trailing median hourly
    /// bytes out an hour must exceed (more than 1, at most 1000000).
    #[serde(default)]
    pub factor: Option<f64>,
    /// `usage_spike` only: how many hours before an hour its trailing median is taken over
    /// (1 to 168, default 24); hours in which the owner had no usage are left out of the median.
    #[serde(default)]
    pub trailing_hours: Option<u64>,
    /// `usage_spike` only (required): bytes out an hour must also exceed, so that an owner
    /// whose median is tiny (quiet, or new) does not alert on ordinary traffic (at least 1).
    #[serde(default)]
    pub min_bytes_out: Option<u64>,
}

impl Rule {
    /// A rule of `kind` named `name` with every optional field unset and the default
    /// `resolve_after_seconds`.
    pub fn new(name: &str, kind: RuleKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            resolve_after_seconds: DEFAULT_RESOLVE_AFTER_SECONDS,
            interval_seconds: None,
            threshold_bytes: None,
            drop_grace_seconds: None,
            metric: None,
            factor: None,
            trailing_hours: None,
            min_bytes_out: None,
        }
    }

    /// `usage_spike`'s `trailing_hours`, or its default.
    pub fn spike_trailing_hours(&self) -> u64 {
        self.trailing_hours.unwrap_or(DEFAULT_SPIKE_TRAILING_HOURS)
    }
}

fn default_resolve_after() -> u64 {
    DEFAULT_RESOLVE_AFTER_SECONDS
}

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Kafka topic (JSON, keyed by alert id); empty string: no Kafka delivery.
    #[serde(default = "default_topic")]
    pub kafka_topic: String,
    /// Generic webhooks: each state change is POSTed as one JSON alert.
    #[serde(default)]
    pub webhook_urls: Vec<String>,
    /// Alertmanager base URLs: each state change is POSTed to `<url>/api/v2/alerts`.
    #[serde(default)]
    pub alertmanager_urls: Vec<String>,
    /// Attempts per sink and evaluation before the delivery is left for the next evaluation.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry (ms); doubled on each further retry.
    #[serde(default = "default_backoff")]
    pub initial_backoff_ms: u64,
    /// Per-request timeout of a webhook (ms).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// PEM file of CA certificates trusted for `https://` webhooks and Alertmanagers, besides
    /// the public (webpki) roots: for receivers with a certificate of a private CA.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_topic() -> String {
    DEFAULT_KAFKA_TOPIC.to_owned()
}
fn default_attempts() -> u32 {
    4
}
fn default_backoff() -> u64 {
    100
}
fn default_timeout() -> u64 {
    2000
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            kafka_topic: default_topic(),
            webhook_urls: Vec::new(),
            alertmanager_urls: Vec::new(),
            max_attempts: default_attempts(),
            initial_backoff_ms: default_backoff(),
            timeout_ms: default_timeout(),
            ca_file: None,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// The plan file (as `botmeter serve --plan`) the `overage_forecast` rules project against;
    /// required by them, read by [`AlertRules::load`].
    #[serde(default)]
    pub plan: Option<std::path::PathBuf>,
    /// The plan read from `plan`.
    #[serde(skip)]
    pub loaded_plan: Option<crate::api::Plan>,
    /// Seconds between evaluations.
    #[serde(default = "default_every")]
    pub evaluate_every_seconds: u64,
    /// Seconds of evidence read back, by ingestion time.
    #[serde(default = "default_lookback")]
    pub lookback_seconds: u64,
    /// Base URL of `botmeter serve`, for the links in alerts.
    #[serde(default = "default_api_base_url")]
    pub api_base_url: String,
    /// Where alerts go.
    #[serde(default)]
    pub delivery: Delivery,
    /// The rules (`[[rules]]`).
    pub rules: Vec<Rule>,
}

fn default_every() -> u64 {
    DEFAULT_EVALUATE_EVERY_SECONDS
}
fn default_lookback() -> u64 {
    DEFAULT_LOOKBACK_SECONDS
}
fn default_api_base_url() -> String {
    "http://127.0.0.1:8080".to_owned()
}

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("alert rules {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (the message names the field and line).
    #[error("alert rules: {0}")]
    Syntax(String),
    /// The plan file could not be used.
    #[error("alert rules: plan: {0}")]
    Plan(String),
    /// A value is out of range or inconsistent.
    #[error("alert rules: rule {rule:?}: field {field} = {value}: {message}")]
    Invalid {
        /// The rule's name (`(file)` for top-level fields).
        rule: String,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: &'static str,
    },
}

fn invalid(
    rule: &str,
    field: &'static str,
    value: impl std::fmt::Display,
    message: &'static str,
) -> RulesError {
    RulesError::Invalid {
        rule: rule.to_owned(),
        field,
        value: value.to_string(),
        message,
    }
}

/// URLs are `http://` or `https://` (rustls; a private CA with `delivery.ca_file`).
fn check_url(rule: &str, field: &'static str, url: &str) -> Result<(), RulesError> {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        _ => Err(invalid(
            rule,
            field,
            format!("{url:?}"),
            "expected an http:// or https:// URL",
        )),
    }
}

impl AlertRules {
    /// Reads and checks a rules file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut rules = Self::parse(&text)?;
        if let Some(plan_path) = &rules.plan {
            let plan =
                crate::api::Plan::load(plan_path).map_err(|e| RulesError::Plan(e.to_string()))?;
            for rule in &rules.rules {
                if let Some(metric) = &rule.metric {
                    if !plan.metrics.iter().any(|(m, _)| m.name() == metric) {
                        return Err(invalid(
                            &rule.name,
                            "metric",
                            format!("{metric:?}"),
                            "not a metric of the plan",
                        ));
                    }
                }
            }
            rules.loaded_plan = Some(plan);
        }
        Ok(rules)
    }

    /// Parses and checks rules from TOML text.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let rules: Self = toml::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?;
        rules.validate()?;
        Ok(rules)
    }

    fn validate(&self) -> Result<(), RulesError> {
        const FILE: &str = "(file)";
        if !(1..=3600).contains(&self.evaluate_every_seconds) {
            return Err(invalid(
                FILE,
                "evaluate_every_seconds",
                self.evaluate_every_seconds,
                "expected 1 to 3600",
            ));
        }
        if !(60..=30 * 86_400).contains(&self.lookback_seconds) {
            return Err(invalid(
                FILE,
                "lookback_seconds",
                self.lookback_seconds,
                "expected 60 to 2592000 (30 days)",
            ));
        }
        check_url(FILE, "api_base_url", &self.api_base_url)?;
        let delivery = &self.delivery;
        for url in &delivery.webhook_urls {
            check_url(FILE, "delivery.webhook_urls", url)?;
        }
        for url in &delivery.alertmanager_urls {
            check_url(FILE, "delivery.alertmanager_urls", url)?;
        }
        if delivery.kafka_topic.is_empty()
            && delivery.webhook_urls.is_empty()
            && delivery.alertmanager_urls.is_empty()
        {
            return Err(invalid(
                FILE,
                "delivery.kafka_topic",
                "\"\"",
                "no sink: name a Kafka topic or at least one webhook",
            ));
        }
        if !(1..=20).contains(&delivery.max_attempts) {
            return Err(invalid(
                FILE,
                "delivery.max_attempts",
                delivery.max_attempts,
                "expected 1 to 20",
            ));
        }
        if !(1..=60_000).contains(&delivery.initial_backoff_ms) {
            return Err(invalid(
                FILE,
                "delivery.initial_backoff_ms",
                delivery.initial_backoff_ms,
                "expected 1 to 60000",
            ));
        }
        if !(1..=60_000).contains(&delivery.timeout_ms) {
            return Err(invalid(
                FILE,
                "delivery.timeout_ms",
                delivery.timeout_ms,
                "expected 1 to 60000",
            ));
        }
        if self.rules.is_empty() {
            return Err(invalid(
                FILE,
                "rules",
                "[]",
                "expected at least one [[rules]]",
            ));
        }
        let mut names = BTreeSet::new();
        for rule in &self.rules {
            let name = rule.name.as_str();
            if name.is_empty()
                || name.len() > 100
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    name,
                    "name",
                    format!("{name:?}"),
                    "expected 1 to 100 of A-Z a-z 0-9 _ -",
                ));
            }
            if !names.insert(name) {
                return Err(invalid(
                    name,
                    "name",
                    format!("{name:?}"),
                    "two rules have this name",
                ));
            }
            if rule.resolve_after_seconds < self.evaluate_every_seconds
                || rule.resolve_after_seconds > self.lookback_seconds
            {
                return Err(invalid(
                    name,
                    "resolve_after_seconds",
                    rule.resolve_after_seconds,
                    "expected between evaluate_every_seconds and lookback_seconds",
                ));
            }
            refuse_other_kinds_fields(rule)?;
            match rule.kind {
                RuleKind::UsageSpike => validate_usage_spike(rule)?,
                RuleKind::UnattributedSpike => {
                    match rule.interval_seconds {
                        None => {
                            return Err(invalid(
                                name,
                                "interval_seconds",
                                "(missing)",
                                "required by unattributed_spike",
                            ))
                        }
                        Some(s) if !(1..=86_400).contains(&s) => {
                            return Err(invalid(name, "interval_seconds", s, "expected 1 to 86400"))
                        }
                        Some(_) => {}
                    }
                    match rule.threshold_bytes {
                        None => {
                            return Err(invalid(
                                name,
                                "threshold_bytes",
                                "(missing)",
                                "required by unattributed_spike",
                            ))
                        }
                        Some(0) => {
                            return Err(invalid(name, "threshold_bytes", 0, "expected at least 1"))
                        }
                        Some(_) => {}
                    }
                }
                RuleKind::OverageForecast => {
                    if rule.metric.is_none() {
                        return Err(invalid(
                            name,
                            "metric",
                            "(missing)",
                            "required by overage_forecast",
                        ));
                    }
                    if self.plan.is_none() {
                        return Err(invalid(
                            name,
                            "plan",
                            "(missing)",
                            "overage_forecast needs the file's top-level plan = \"<plan.toml>\"",
                        ));
                    }
                }
                RuleKind::DeviceDropped => {
                    if let Some(s) = rule.drop_grace_seconds {
                        if s > 30 * 86_400 {
                            return Err(invalid(
                                name,
                                "drop_grace_seconds",
                                s,
                                "expected 0 to 2592000 (30 days)",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Refuses a field that belongs to another kind than the rule's (each kind-specific field has
/// one kind).
fn refuse_other_kinds_fields(rule: &Rule) -> Result<(), RulesError> {
    let fields: [(&'static str, Option<String>, RuleKind, &'static str); 7] = [
        (
            "factor",
            rule.factor.map(|k| k.to_string()),
            RuleKind::UsageSpike,
            "only usage_spike has a factor",
        ),
        (
            "trailing_hours",
            rule.trailing_hours.map(|h| h.to_string()),
            RuleKind::UsageSpike,
            "only usage_spike has trailing hours",
        ),
        (
            "min_bytes_out",
            rule.min_bytes_out.map(|b| b.to_string()),
            RuleKind::UsageSpike,
            "only usage_spike has a bytes-out floor",
        ),
        (
            "drop_grace_seconds",
            rule.drop_grace_seconds.map(|s| s.to_string()),
            RuleKind::DeviceDropped,
            "only device_dropped has a drop grace",
        ),
        (
            "interval_seconds",
            rule.interval_seconds.map(|s| s.to_string()),
            RuleKind::UnattributedSpike,
            "only unattributed_spike has an interval (usage_spike sums whole UTC hours)",
        ),
        (
            "threshold_bytes",
            rule.threshold_bytes.map(|b| b.to_string()),
            RuleKind::UnattributedSpike,
            "only unattributed_spike has a threshold (usage_spike: min_bytes_out)",
        ),
        (
            "metric",
            rule.metric.as_ref().map(|m| format!("{m:?}")),
            RuleKind::OverageForecast,
            "only overage_forecast has a metric",
        ),
    ];
    for (field, value, kind, message) in fields {
        if let Some(value) = value.filter(|_| rule.kind != kind) {
            return Err(invalid(&rule.name, field, value, message));
        }
    }
    Ok(())
}

/// The fields of a `usage_spike` rule: `factor` and `min_bytes_out` required and in range,
/// `trailing_hours` in range (other kinds' fields are refused by `refuse_other_kinds_fields`).
fn validate_usage_spike(rule: &Rule) -> Result<(), RulesError> {
    let name = rule.name.as_str();
    match rule.factor {
        None => {
            return Err(invalid(
                name,
                "factor",
                "(missing)",
                "required by usage_spike",
            ))
        }
        Some(k) if !(k > 1.0 && k <= 1_000_000.0) => {
            return Err(invalid(
                name,
                "factor",
                k,
                "expected more than 1 and at most 1000000",
            ))
        }
        Some(_) => {}
    }
    if let Some(h) = rule.trailing_hours {
        if !(1..=MAX_SPIKE_TRAILING_HOURS).contains(&h) {
            return Err(invalid(
                name,
                "trailing_hours",
                h,
                "expected 1 to 168 (7 days)",
            ));
        }
    }
    match rule.min_bytes_out {
        None => Err(invalid(
            name,
            "min_bytes_out",
            "(missing)",
            "required by usage_spike",
        )),
        Some(0) => Err(invalid(name, "min_bytes_out", 0, "expected at least 1")),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spike(fields: &str) -> Result<AlertRules, RulesError> {
        AlertRules::parse(&format!(
            "[[rules]]\nname = \"spike\"\nkind = \"usage_spike\"\n{fields}"
        ))
    }

    #[test]
    fn a_usage_spike_rule_needs_a_factor_over_1_and_a_floor() {
        let rules = spike("factor = 4.5\nmin_bytes_out = 1000000\n").unwrap();
        let rule = &rules.rules[0];
        assert_eq!(
            (rule.factor, rule.min_bytes_out, rule.spike_trailing_hours()),
            (Some(4.5), Some(1_000_000), DEFAULT_SPIKE_TRAILING_HOURS)
        );
        assert_eq!(
            spike("factor = 2\nmin_bytes_out = 1\ntrailing_hours = 6\n")
                .unwrap()
                .rules[0]
                .spike_trailing_hours(),
            6
        );
        for (fields, expected) in [
            ("min_bytes_out = 1\n", "field factor = (missing)"),
            (
                "factor = 1.0\nmin_bytes_out = 1\n",
                "field factor = 1: expected more than 1",
            ),
            ("factor = -3\nmin_bytes_out = 1\n", "field factor = -3"),
            ("factor = nan\nmin_bytes_out = 1\n", "field factor = NaN"),
            ("factor = 2\n", "field min_bytes_out = (missing)"),
            ("factor = 2\nmin_bytes_out = 0\n", "field min_bytes_out = 0"),
            (
                "factor = 2\nmin_bytes_out = 1\ntrailing_hours = 0\n",
                "field trailing_hours = 0",
            ),
            (
                "factor = 2\nmin_bytes_out = 1\ntrailing_hours = 721\n",
                "field trailing_hours = 721",
            ),
            (
                "factor = 2\nmin_bytes_out = 1\nthreshold_bytes = 5\n",
                "field threshold_bytes = 5",
            ),
            (
                "factor = 2\nmin_bytes_out = 1\ninterval_seconds = 60\n",
                "field interval_seconds = 60",
            ),
            (
                "factor = 2\nmin_bytes_out = 1\nmetric = \"bytes_out\"\n",
                "field metric",
            ),
            (
                "factor = 2\nmin_bytes_out = 1\ndrop_grace_seconds = 5\n",
                "field drop_grace_seconds = 5",
            ),
            ("factor = \"big\"\nmin_bytes_out = 1\n", "factor"),
        ] {
            let message = spike(fields).unwrap_err().to_string();
            assert!(
                message.contains(expected)
                    && (message.contains("\"spike\"") || expected == "factor"),
                "{fields:?}: {message}"
            );
        }
        // The spike fields belong to usage_spike only.
        for field in ["factor = 2", "trailing_hours = 3", "min_bytes_out = 9"] {
            let message = error(&format!(
                "[[rules]]\nname = \"acl\"\nkind = \"acl_violation\"\n{field}\n"
            ));
            assert!(
                message.contains(&format!("field {field}")) && message.contains("only usage_spike"),
                "{message}"
            );
        }
    }

    const EXAMPLE: &str = include_str!("../../../../deploy/alert-rules.example.toml");

    #[test]
    fn the_example_file_is_valid() {
        let rules = AlertRules::parse(EXAMPLE).unwrap();
        let kinds: BTreeSet<_> = rules.rules.iter().map(|r| r.kind).collect();
        assert_eq!(kinds.len(), 7, "{kinds:?}");
        // And its plan is one: loaded from the repository's root, as documented.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let plan = crate::api::Plan::load(&root.join(rules.plan.unwrap())).unwrap();
        assert!(plan.metrics.iter().any(|(m, _)| m.name() == "bytes_out"));
    }

    fn error(text: &str) -> String {
        AlertRules::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_rule_field_and_value() {
        let message = error(
            "[[rules]]\nname = \"burst\"\nkind = \"unattributed_spike\"\ninterval_seconds = 60\n",
        );
        assert!(
            message.contains("\"burst\"")
                && message.contains("threshold_bytes")
                && message.contains("(missing)"),
            "{message}"
        );
        let message = error(
            "[[rules]]\nname = \"r\"\nkind = \"acl_violation\"\nresolve_after_seconds = 999999\n",
        );
        assert!(
            message.contains("resolve_after_seconds = 999999"),
            "{message}"
        );
        let message = error("[[rules]]\nname = \"a\"\nkind = \"acl_violation\"\n[[rules]]\nname = \"a\"\nkind = \"acl_violation\"\n");
        assert!(message.contains("two rules"), "{message}");
        let message = error("[[rules]]\nname = \"a\"\nkind = \"device_gone\"\n");
        assert!(message.contains("device_gone"), "{message}");
        let message = error("[delivery]\nwebhook_urls = [\"ftp://x\"]\n[[rules]]\nname = \"a\"\nkind = \"acl_violation\"\n");
        assert!(
            message.contains("delivery.webhook_urls") && message.contains("ftp://x"),
            "{message}"
        );
        let message =
            error("[[rules]]\nname = \"a\"\nkind = \"acl_violation\"\nthreshold_bytes = 5\n");
        assert!(message.contains("threshold_bytes = 5"), "{message}");
        let message =
            error("[[rules]]\nname = \"o\"\nkind = \"overage_forecast\"\nmetric = \"bytes_out\"\n");
        assert!(
            message.contains("\"o\"") && message.contains("plan"),
            "{message}"
        );
        let message =
            error("plan = \"p.toml\"\n[[rules]]\nname = \"o\"\nkind = \"overage_forecast\"\n");
        assert!(
            message.contains("metric") && message.contains("(missing)"),
            "{message}"
        );
        let message = error("[[rules]]\nname = \"s\"\nkind = \"usage_spike\"\nmin_bytes_out = 1\n");
        assert!(
            message.contains("\"s\"") && message.contains("factor = (missing)"),
            "{message}"
        );
        let message = error("rules = []\n");
        assert!(message.contains("at least one"), "{message}");
    }
}
