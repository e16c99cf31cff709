//! A Kafka message becomes an event or a [`DeadLetter`], never both and never neither: oversized
//! and empty payloads, what the decoder rejects, events on the wrong topic and traffic stamped
//! outside the plausible window ([`EventTimeWindow`]) are dead letters with the reason, the
//! source position and the original bytes (secrets replaced).

use chrono::{DateTime, Utc};
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

/// The event times traffic may plausibly carry, as seen from this instance's clock: not after
/// now plus the allowed clock skew, not before a floor. Traffic outside it is never waited on
/// (waiting for the control plane to pass a far-future time would stall every later message):
/// it is dead-lettered with reason `event_time_out_of_range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeWindow {
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
    max_clock_skew: chrono::Duration,
}

impl EventTimeWindow {
    /// The window at `now`.
    pub fn at(
        now: DateTime<Utc>,
        max_clock_skew: std::time::Duration,
        floor: DateTime<Utc>,
    ) -> Self {
        let max_clock_skew =
            chrono::Duration::from_std(max_clock_skew).unwrap_or(chrono::Duration::MAX);
        Self {
            earliest: floor,
            latest: now
                .checked_add_signed(max_clock_skew)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            max_clock_skew,
        }
    }

    /// Why `t` is outside the window, if it is.
    fn refuses(&self, t: DateTime<Utc>) -> Option<String> {
        if t > self.latest {
            Some(format!(
                "event time {} is more than {} s after this instance's clock ({}), beyond --max-clock-skew-ms; not waited on",
                t.to_rfc3339(),
                self.max_clock_skew.num_seconds(),
                (self.latest - self.max_clock_skew).to_rfc3339(),
            ))
        } else if t < self.earliest {
            Some(format!(
                "event time {} is before the floor {} (--min-event-time)",
                t.to_rfc3339(),
                self.earliest.to_rfc3339(),
            ))
        } else {
            None
        }
    }
}

/// Decodes a message of the traffic topic and hands the traffic event, with the message's
/// partition and offset, to `keep`: the one-pass borrowed decoder first, the full decoder (and
/// its verdict, for a dead letter) for anything it leaves. Its usage time must be in `window`.
pub fn decode_traffic<T>(
    message: &BorrowedMessage<'_>,
    window: &EventTimeWindow,
    keep: impl FnOnce(&TrafficRef<'_>, i32, i64) -> T,
) -> Result<T, DeadLetter> {
    let payload = message.payload().unwrap_or_default();
    if payload.len() <= MAX_MESSAGE_BYTES {
        if let Some(traffic) = model::decode_traffic(payload) {
            return in_window(message, window, &traffic)
                .map(|()| keep(&traffic, message.partition(), message.offset()));
        }
    }
    let event = decode(message)?;
    match event.traffic() {
        Some(traffic) => in_window(message, window, &traffic)
            .map(|()| keep(&traffic, message.partition(), message.offset())),
        None => Err(wrong_topic(
            message,
            &event,
            "a control-plane event on the traffic topic",
        )),
    }
}

fn in_window(
    message: &BorrowedMessage<'_>,
    window: &EventTimeWindow,
    traffic: &TrafficRef<'_>,
) -> Result<(), DeadLetter> {
    match window.refuses(traffic.usage_time()) {
        None => Ok(()),
        Some(why) => Err(dead_letter(
            message,
            "event_time_out_of_range",
            format!(
                "event {} ({}): {why}",
                traffic.event_id,
                traffic.kind.event_type()
            ),
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
    fn the_window_refuses_the_far_future_and_the_far_past_by_name() {
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let floor: DateTime<Utc> = "2000-01-01T00:00:00Z".parse().unwrap();
        let window = EventTimeWindow::at(now, std::time::Duration::from_secs(300), floor);
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(window.refuses(t("2026-12-06T12:05:00Z")), None);
        assert_eq!(window.refuses(t("2000-01-01T00:00:00Z")), None);
        let future = window.refuses(t("2030-01-01T00:00:00Z")).unwrap();
        assert!(
            future.contains("2030-01-01") && future.contains("300 s"),
            "{future}"
        );
        let past = window.refuses(t("1999-12-31T23:59:59Z")).unwrap();
        assert!(
            past.contains("1999-12-31") && past.contains("--min-event-time"),
            "{past}"
        );
    }

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
