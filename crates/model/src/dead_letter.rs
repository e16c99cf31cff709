//! Where a Kafka message came from, and a message that ends as a dead letter instead of a row.
//! Plain data: `ingest` makes dead letters while decoding, `query` maps them to rows, and the
//! pipeline publishes them. A dead letter keeps the original bytes, so nothing is lost.

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
    /// The original bytes (empty for a message without a payload).
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The message at `source`, with its original bytes, dead-lettered for `reason`
    /// (`reason_kind` is its class, a metric label).
    pub fn new(
        source: SourcePosition<'_>,
        reason_kind: impl Into<String>,
        reason: impl Into<String>,
        payload: &[u8],
    ) -> Self {
        Self {
            topic: source.topic.to_owned(),
            partition: source.partition,
            offset: source.offset,
            reason_kind: reason_kind.into(),
            reason: reason.into(),
            payload: payload.to_vec(),
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
    }
}
