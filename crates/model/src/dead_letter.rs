//! Where a Kafka message came from, and a message that ends as a dead letter instead of a row.
//! Plain data: `ingest` makes dead letters while decoding, `query` maps them to rows, and the
//! pipeline publishes them. A dead letter keeps the original bytes, so nothing is lost — except
//! its secrets: [`DeadLetter::new`], the one constructor, replaces them in the payload and the
//! reason (see [`crate::redact`]).

/// A message's place in Kafka: the key of exactly-once delivery (every row carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourcePosition<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// One message that ends here instead of in a usage row or the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Reason class, the metric label (`malformed_json`, `missing_field`, `invalid_field`, …).
    pub reason_kind: String,
    /// Full reason naming the event, field and value.
    pub reason: String,
    /// The original bytes with secrets replaced (empty for a message without a payload).
    pub payload: Vec<u8>,
    /// Size of the original message.
    pub payload_bytes: u64,
}

impl DeadLetter {
    /// The message at `source`, with its original bytes, dead-lettered for `reason`
    /// (`reason_kind` is its class, a metric label). Secrets are replaced in the payload and in
    /// the reason.
    pub fn new(
        source: SourcePosition<'_>,
        reason_kind: impl Into<String>,
        reason: impl Into<String>,
        payload: &[u8],
    ) -> Self {
        let (redacted, secrets) = crate::redact::redact_payload(payload);
        Self {
            topic: source.topic.to_owned(),
            partition: source.partition,
            offset: source.offset,
            reason_kind: reason_kind.into(),
            reason: crate::redact::redact_text(&reason.into(), &secrets),
            payload: redacted,
            payload_bytes: payload.len() as u64,
        }
    }

    /// Where the message came from.
    pub fn source(&self) -> SourcePosition<'_> {
        SourcePosition {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_keeps_its_source_and_bytes() {
        let source = SourcePosition {
            topic: "botmeter.traffic",
            partition: 3,
            offset: 41,
        };
        let letter = DeadLetter::new(source, "empty", "no payload", b"{}");
        assert_eq!(letter.source(), source);
        assert_eq!(
            (letter.reason_kind.as_str(), letter.reason.as_str()),
            ("empty", "no payload")
        );
        assert_eq!(letter.payload, b"{}");
        assert_eq!(letter.payload_bytes, 2);
    }

    #[test]
    fn a_dead_letter_keeps_no_secret() {
        let source = SourcePosition {
            topic: "botmeter.control",
            partition: 0,
            offset: 1,
        };
        let payload = br#"{"event_id":"ev_1","object":{"token":"tok_SECRET","acl":"x"}}"#;
        let letter = DeadLetter::new(source, "invalid_field", "saw tok_SECRET", payload);
        let stored = String::from_utf8(letter.payload.clone()).unwrap();
        assert!(!stored.contains("tok_SECRET") && !letter.reason.contains("tok_SECRET"));
        assert!(stored.contains("\"acl\":\"x\""), "{stored}");
        assert_eq!(letter.payload_bytes, payload.len() as u64);
    }
}
