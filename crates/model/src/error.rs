//! The decoder's error: always names the event (when its id could be read), the field and the value.

use std::fmt;

/// Result of decoding.
pub type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// Why a payload could not be decoded into an [`crate::Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// `event_id` when it could be read, else `None`.
    pub event_id: Option<String>,
    /// `event_type` when it could be read, else `None`.
    pub event_type: Option<String>,
    /// Dotted path of the offending field (`object.conn.bytes_out`), or `<payload>`.
    pub field: String,
    /// What was wrong, including the value found where serde reports it.
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            event_id: None,
            event_type: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn with_event(mut self, event_id: &str, event_type: &str) -> Self {
        self.event_id = Some(event_id.to_owned());
        self.event_type = Some(event_type.to_owned());
        self
    }

    /// A short machine-friendly reason class, used as the dead-letter reason label.
    pub fn kind(&self) -> &'static str {
        if self.field == "<payload>" {
            "malformed_json"
        } else if self.reason.contains(crate::limits::TIME_OUT_OF_RANGE) {
            "event_time_out_of_range"
        } else if self.reason.contains(crate::limits::COUNT_OUT_OF_RANGE) {
            "count_out_of_range"
        } else if self.reason.starts_with("missing field") {
            "missing_field"
        } else {
            "invalid_field"
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.event_id, &self.event_type) {
            (Some(id), Some(ty)) => write!(f, "event {id} ({ty}): ")?,
            (Some(id), None) => write!(f, "event {id}: ")?,
            _ => f.write_str("event without a readable event_id: ")?,
        }
        write!(f, "field {}: {}", self.field, self.reason)
    }
}
