//! A Kafka message becomes an event or a [`DeadLetter`], never both and never neither: oversized
//! and empty payloads, what the decoder rejects, and events on the wrong topic are dead letters
//! with the reason, the source position and the original bytes.

use model::{DeadLetter, Event, SourcePosition, TrafficRef};
use rdkafka::message::{BorrowedMessage, Message};

/// Largest payload decoded; larger messages are dead-lettered unread (a poison pill must not
/// stall or bloat the pipeline).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The source position of a message.
#[inline]
pub fn position<'a>(message: &'a BorrowedMessage<'_>) -> SourcePosition<'a> {
    SourcePosition {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// `message`, with its original bytes, as a dead letter for `reason`.
fn dead_letter(message: &BorrowedMessage<'_>, reason_kind: &str, reason: String) -> DeadLetter {
    DeadLetter::new(
        position(message),
        reason_kind,
        reason,
        message.payload().unwrap_or_default(),
    )
}

/// Decodes any event (the full decoder).
pub fn decode(message: &BorrowedMessage<'_>) -> Result<Event, DeadLetter> {
    decode_payload(message.payload().unwrap_or_default())
        .map_err(|(kind, reason)| dead_letter(message, kind, reason))
}

/// The full decoder's verdict on a payload: the event, or the dead letter's reason class and text.
fn decode_payload(payload: &[u8]) -> Result<Event, (&'static str, String)> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err((
            "oversized",
            format!(
                "message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
                payload.len()
            ),
        ));
    }
    if payload.is_empty() {
        return Err((
            "empty",
            "message has an empty or no payload (a tombstone?)".into(),
        ));
    }
    model::decode(payload).map_err(|e| (e.kind(), e.to_string()))
}

/// Decodes a message of the control topic: any event but traffic.
pub fn decode_control(message: &BorrowedMessage<'_>) -> Result<Event, DeadLetter> {
    let event = decode(message)?;
    if event.kind().is_traffic() {
        return Err(wrong_topic(
            message,
            &event,
            "a traffic event on the control topic",
        ));
    }
    Ok(event)
}

/// Decodes a message of the traffic topic and hands the traffic event, with the message's
/// partition and offset, to `keep`: the one-pass borrowed decoder first, the full decoder (and
/// its verdict, for a dead letter) for anything it leaves.
pub fn decode_traffic<T>(
    message: &BorrowedMessage<'_>,
    keep: impl FnOnce(&TrafficRef<'_>, i32, i64) -> T,
) -> Result<T, DeadLetter> {
    let payload = message.payload().unwrap_or_default();
    if payload.len() <= MAX_MESSAGE_BYTES {
        if let Some(traffic) = model::decode_traffic(payload) {
            return Ok(keep(&traffic, message.partition(), message.offset()));
        }
    }
    let event = decode(message)?;
    match event.traffic() {
        Some(traffic) => Ok(keep(&traffic, message.partition(), message.offset())),
        None => Err(wrong_topic(
            message,
            &event,
            "a control-plane event on the traffic topic",
        )),
    }
}

fn wrong_topic(message: &BorrowedMessage<'_>, event: &Event, what: &str) -> DeadLetter {
    dead_letter(
        message,
        "wrong_topic",
        format!("event {} ({}): {what}", event.event_id, event.event_type),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_oversized_payloads_are_refused_unread() {
        assert_eq!(decode_payload(b"").unwrap_err().0, "empty");
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        let (kind, reason) = decode_payload(&big).unwrap_err();
        assert_eq!(kind, "oversized");
        assert!(
            reason.contains(&(MAX_MESSAGE_BYTES + 1).to_string()),
            "{reason}"
        );
        assert_eq!(decode_payload(b"{").unwrap_err().0, "malformed_json");
    }
}
