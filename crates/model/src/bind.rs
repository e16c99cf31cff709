//! ACL bind rules of tunnel credentials and SSH keys, parsed and matched as ngrok's Credentials
//! API reference describes them:
//!
//! - `bind:example.ngrok.io`: exactly that hostname;
//! - `bind:*.example.com`: any subdomain of `example.com`, and the wildcard name `*.example.com`
//!   itself (a wildcard endpoint), but not `example.com`;
//! - `bind:1.tcp.ngrok.io:20002`: that TCP address;
//! - `bind:key=value`: labeled tunnels; key and/or value may be `*`;
//! - `*` (or `bind:*`), and an empty list, permit everything.
//!
//! Hostnames compare case-insensitively. A rule that is none of these is rejected when the
//! credential is decoded, so a typo cannot silently permit or forbid traffic.

use std::collections::BTreeMap;
use std::fmt;

/// Why an ACL entry is not a bind rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("acl rule {rule:?}: {reason}")]
pub struct BindRuleError {
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One side of a label rule: a literal or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelPattern {
    /// `*`: anything.
    Any,
    /// Exactly this string.
    Exact(String),
}

impl LabelPattern {
    fn matches(&self, s: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(expected) => expected == s,
        }
    }
}

/// A parsed bind rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindRule {
    /// `*`: everything.
    Any,
    /// An exact hostname (lowercased).
    Domain(String),
    /// `*.suffix`: the suffix without the leading `*.` (lowercased).
    WildcardDomain(String),
    /// `host:port` (host lowercased).
    Address {
        /// Hostname or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// `key=value` label rule.
    Label {
        /// Label key or `*`.
        key: LabelPattern,
        /// Label value or `*`.
        value: LabelPattern,
    },
}

impl BindRule {
    /// Parses one ACL entry.
    pub fn parse(rule: &str) -> Result<Self, BindRuleError> {
        let err = |reason| BindRuleError {
            rule: rule.to_owned(),
            reason,
        };
        let trimmed = rule.trim();
        if trimmed == "*" {
            return Ok(Self::Any);
        }
        let body = trimmed.strip_prefix("bind:").ok_or_else(|| {
            err("expected a rule of the form bind:<domain|*.domain|host:port|key=value> or *")
        })?;
        if body.is_empty() {
            return Err(err("empty bind target"));
        }
        if body == "*" {
            return Ok(Self::Any);
        }
        if let Some((key, value)) = body.split_once('=') {
            if key.is_empty() || value.is_empty() {
                return Err(err("label rule needs a key and a value (use * for any)"));
            }
            if value.contains('=') {
                return Err(err("label rule has more than one '='"));
            }
            let pattern = |s: &str| {
                if s == "*" {
                    Ok(LabelPattern::Any)
                } else if s.contains('*') {
                    Err(err("a label key or value is either * or has no *"))
                } else {
                    Ok(LabelPattern::Exact(s.to_owned()))
                }
            };
            return Ok(Self::Label {
                key: pattern(key)?,
                value: pattern(value)?,
            });
        }
        if let Some((host, port)) = body.rsplit_once(':') {
            let port: u16 = port
                .parse()
                .map_err(|_| err("port after ':' is not a number 0..=65535"))?;
            validate_hostname(host).map_err(err)?;
            if host.contains('*') {
                return Err(err("a TCP address cannot be a wildcard"));
            }
            return Ok(Self::Address {
                host: host.to_ascii_lowercase(),
                port,
            });
        }
        if let Some(suffix) = body.strip_prefix("*.") {
            validate_hostname(suffix).map_err(err)?;
            if suffix.contains('*') {
                return Err(err("only one leading wildcard label is allowed"));
            }
            return Ok(Self::WildcardDomain(suffix.to_ascii_lowercase()));
        }
        validate_hostname(body).map_err(err)?;
        if body.contains('*') {
            return Err(err(
                "a wildcard is only allowed as the leading label (*.example.com)",
            ));
        }
        Ok(Self::Domain(body.to_ascii_lowercase()))
    }

    /// Parses every entry of an ACL, failing on the first bad one.
    pub fn parse_all<S: AsRef<str>>(acl: &[S]) -> Result<Vec<Self>, BindRuleError> {
        acl.iter().map(|rule| Self::parse(rule.as_ref())).collect()
    }

    /// Whether this rule allows an endpoint with this hostname, port and labels.
    pub fn matches(
        &self,
        hostname: &str,
        port: Option<u16>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        match self {
            Self::Any => true,
            Self::Domain(domain) => hostname.eq_ignore_ascii_case(domain),
            Self::WildcardDomain(suffix) => {
                let host = hostname.to_ascii_lowercase();
                host == format!("*.{suffix}")
                    || (host.len() > suffix.len() + 1
                        && host.ends_with(suffix.as_str())
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.')
            }
            Self::Address {
                host,
                port: rule_port,
            } => port == Some(*rule_port) && hostname.eq_ignore_ascii_case(host),
            Self::Label { key, value } => labels
                .iter()
                .any(|(k, v)| key.matches(k) && value.matches(v)),
        }
    }

    /// Whether a credential with these rules may bind the endpoint: an empty list permits all.
    pub fn permits(
        rules: &[Self],
        hostname: &str,
        port: Option<u16>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        rules.is_empty()
            || rules
                .iter()
                .any(|rule| rule.matches(hostname, port, labels))
    }
}

impl fmt::Display for BindRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = |p: &LabelPattern| match p {
            LabelPattern::Any => "*".to_owned(),
            LabelPattern::Exact(s) => s.clone(),
        };
        match self {
            Self::Any => f.write_str("*"),
            Self::Domain(d) => write!(f, "bind:{d}"),
            Self::WildcardDomain(s) => write!(f, "bind:*.{s}"),
            Self::Address { host, port } => write!(f, "bind:{host}:{port}"),
            Self::Label { key, value } => write!(f, "bind:{}={}", label(key), label(value)),
        }
    }
}

fn validate_hostname(host: &str) -> Result<(), &'static str> {
    if host.is_empty() || host.len() > 253 {
        return Err("hostname is empty or longer than 253 bytes");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("hostname has an empty label");
        }
        if label != "*"
            && !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("hostname has a character other than letters, digits, '-', '_' and '.'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(BindRule::parse("*").unwrap(), BindRule::Any);
        assert_eq!(
            BindRule::parse("bind:Example.ngrok.io").unwrap(),
            BindRule::Domain("example.ngrok.io".into())
        );
        assert_eq!(
            BindRule::parse("bind:*.example.com").unwrap(),
            BindRule::WildcardDomain("example.com".into())
        );
        assert_eq!(
            BindRule::parse("bind:1.tcp.ngrok.io:20002").unwrap(),
            BindRule::Address {
                host: "1.tcp.ngrok.io".into(),
                port: 20002
            }
        );
        assert_eq!(
            BindRule::parse("bind:*=example").unwrap(),
            BindRule::Label {
                key: LabelPattern::Any,
                value: LabelPattern::Exact("example".into())
            }
        );
    }

    #[test]
    fn rejects_what_cannot_be_meant() {
        for bad in [
            "",
            "example.com",
            "bind:",
            "bind:a..b",
            "bind:foo.*.com",
            "bind:host:99999",
            "bind:=x",
            "bind:k=",
            "bind:k=v=w",
            "bind:*.*.com",
            "bind:a b.com",
        ] {
            assert!(BindRule::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let err = BindRule::parse("bind:host:http").unwrap_err();
        assert!(err.to_string().contains("bind:host:http"), "{err}");
    }

    #[test]
    fn wildcard_matches_subdomains_and_itself_not_the_apex() {
        let rule = BindRule::parse("bind:*.example.com").unwrap();
        assert!(rule.matches("a.example.com", None, &no_labels()));
        assert!(rule.matches("a.b.Example.com", None, &no_labels()));
        assert!(rule.matches("*.example.com", None, &no_labels()));
        assert!(!rule.matches("example.com", None, &no_labels()));
        assert!(!rule.matches("badexample.com", None, &no_labels()));
    }

    #[test]
    fn address_needs_host_and_port() {
        let rule = BindRule::parse("bind:1.tcp.ngrok.io:20002").unwrap();
        assert!(rule.matches("1.tcp.ngrok.io", Some(20002), &no_labels()));
        assert!(!rule.matches("1.tcp.ngrok.io", Some(20003), &no_labels()));
        assert!(!rule.matches("1.tcp.ngrok.io", None, &no_labels()));
    }

    #[test]
    fn label_rules_with_wildcards() {
        let labels: BTreeMap<_, _> = [("env".to_owned(), "prod".to_owned())].into();
        assert!(BindRule::parse("bind:env=prod")
            .unwrap()
            .matches("x", None, &labels));
        assert!(BindRule::parse("bind:*=prod")
            .unwrap()
            .matches("x", None, &labels));
        assert!(BindRule::parse("bind:env=*")
            .unwrap()
            .matches("x", None, &labels));
        assert!(!BindRule::parse("bind:env=dev")
            .unwrap()
            .matches("x", None, &labels));
        assert!(!BindRule::parse("bind:*=*")
            .unwrap()
            .matches("x", None, &no_labels()));
    }

    #[test]
    fn empty_list_and_star_permit_all() {
        assert!(BindRule::permits(&[], "anything.io", Some(1), &no_labels()));
        assert!(BindRule::permits(
            &[BindRule::Any],
            "anything.io",
            None,
            &no_labels()
        ));
        assert!(!BindRule::permits(
            &[BindRule::Domain("a.io".into())],
            "b.io",
            None,
            &no_labels()
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(rule in ".{0,64}") {
            let _ = BindRule::parse(&rule);
        }

        #[test]
        fn display_round_trips(rule in prop_oneof![
            "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,3}".prop_map(|h| format!("bind:{h}")),
            "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,3}".prop_map(|h| format!("bind:*.{h}")),
            ("[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,3}", any::<u16>()).prop_map(|(h, p)| format!("bind:{h}:{p}")),
            ("([a-z]{1,6}|\\*)", "([a-z0-9]{1,6}|\\*)").prop_map(|(k, v)| format!("bind:{k}={v}")),
        ]) {
            let parsed = BindRule::parse(&rule).unwrap();
            prop_assert_eq!(BindRule::parse(&parsed.to_string()).unwrap(), parsed);
        }

        #[test]
        fn exact_domain_matches_only_itself(a in "[a-z]{1,8}\\.[a-z]{2,4}", b in "[a-z]{1,8}\\.[a-z]{2,4}") {
            let rule = BindRule::parse(&format!("bind:{a}")).unwrap();
            prop_assert!(rule.matches(&a.to_uppercase(), None, &BTreeMap::new()));
            prop_assert_eq!(rule.matches(&b, None, &BTreeMap::new()), a == b);
        }

        #[test]
        fn wildcard_matches_any_subdomain(sub in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,2}", apex in "[a-z]{1,8}\\.[a-z]{2,4}") {
            let rule = BindRule::parse(&format!("bind:*.{apex}")).unwrap();
            let host = format!("{sub}.{apex}");
            prop_assert!(rule.matches(&host, None, &BTreeMap::new()));
            prop_assert!(!rule.matches(&apex, None, &BTreeMap::new()));
            let glued = format!("{sub}{apex}");
            prop_assert!(!rule.matches(&glued, None, &BTreeMap::new()));
        }
    }
}
