//! How a failed ClickHouse call is retried: exponential backoff up to a cap, and a verdict on the
//! error. A transient failure (ClickHouse down, slow, restarting, out of memory) is retried for
//! as long as it lasts; a permanent one (ClickHouse refused the data or the schema does not match
//! the rows) would fail the same way every time, so it is retried only a few times, in case a
//! concurrent migration was mid-way, and then reported to the caller, which stops with it
//! instead of holding its partitions paused forever.

use std::time::Duration;

use crate::error::Error;

/// The first pause after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Default cap of the pause between retries of a write, in milliseconds.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 10_000;
/// Attempts at a call that fails permanently before the failure is final.
pub const PERMANENT_ATTEMPTS: u32 = 3;

/// Server error codes that mean the rows or the statement are wrong, not the server's state:
/// parse and type errors, data ClickHouse cannot store, columns that do not exist.
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
];

/// Whether retrying a call that failed with `error` cannot help.
pub fn is_permanent(error: &Error) -> bool {
    use clickhouse::error::Error as Client;
    match error {
        Error::ClickHouse { source, .. } => match source {
            Client::BadResponse(text) => {
                server_code(text).is_some_and(|code| PERMANENT_CODES.contains(&code))
            }
            Client::Custom(_)
            | Client::SequenceMustHaveLength
            | Client::InvalidUtf8Encoding(_)
            | Client::SchemaMismatch(_)
            | Client::Unsupported(_)
            | Client::InvalidParams(_) => true,
            _ => false,
        },
        Error::Timeout { .. } => false,
        // Configuration and migration-file errors never go away by themselves.
        _ => true,
    }
}

/// The `Code: N` ClickHouse puts at the start of an exception's text.
fn server_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// Exponential backoff between retries, and the count of permanent failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    permanent_failures: u32,
    /// Permanent failures that end the retries ([`PERMANENT_ATTEMPTS`], or never).
    permanent_attempts: u32,
}

impl Backoff {
    /// Pauses of [`FIRST_BACKOFF`], doubling up to `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            next: FIRST_BACKOFF,
            max,
            permanent_failures: 0,
            permanent_attempts: PERMANENT_ATTEMPTS,
        }
    }

    /// Like [`Self::new`], but no failure ends the retries: for a call that cannot give up (the
    /// positions a rebalance resumes from; without them it would re-read what is durable).
    pub fn forever(max: Duration) -> Self {
        Self {
            permanent_attempts: u32::MAX,
            ..Self::new(max)
        }
    }

    /// The pause before the next attempt (doubling the one after it, up to the cap).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// The pause the next [`Self::next_pause`] returns.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Records a failure; `Err` with the error once a permanent one has been seen
    /// [`PERMANENT_ATTEMPTS`] times (a transient failure never ends the retries).
    pub fn failed(&mut self, error: Error) -> Result<Error, Error> {
        if is_permanent(&error) {
            self.permanent_failures += 1;
            if self.permanent_failures >= self.permanent_attempts {
                return Err(error);
            }
        }
        Ok(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(text: &str) -> Error {
        Error::ClickHouse {
            action: "insert 3 rows into usage_events".into(),
            source: clickhouse::error::Error::BadResponse(text.into()),
        }
    }

    #[test]
    fn bad_data_is_permanent_and_an_unreachable_server_is_not() {
        // ClickHouse 18.16's and current ClickHouse's spellings.
        assert!(is_permanent(&server_error(
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: x"
        )));
        assert!(is_permanent(&server_error(
            "Code: 53. DB::Exception: Type mismatch in IN or VALUES section. (TYPE_MISMATCH)"
        )));
        assert!(!is_permanent(&server_error(
            "Code: 241, e.displayText() = DB::Exception: Memory limit (total) exceeded"
        )));
        assert!(!is_permanent(&server_error("Code: 252. Too many parts")));
        assert!(!is_permanent(&server_error("502 Bad Gateway")));
        assert!(!is_permanent(&Error::Timeout {
            action: "insert".into(),
            after: Duration::from_secs(30),
        }));
        assert!(!is_permanent(&Error::ClickHouse {
            action: "insert".into(),
            source: clickhouse::error::Error::Network("connection refused".into()),
        }));
    }

    #[test]
    fn the_pause_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(500));
        let pauses: Vec<u128> = (0..5).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn only_permanent_failures_end_the_retries() {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        for _ in 0..100 {
            assert!(backoff
                .failed(server_error("Code: 241. Memory limit"))
                .is_ok());
        }
        let bad = || server_error("Code: 117. DB::Exception: Incorrect data");
        for _ in 1..PERMANENT_ATTEMPTS {
            assert!(backoff.failed(bad()).is_ok());
        }
        let error = backoff.failed(bad()).unwrap_err();
        assert!(error.to_string().contains("Incorrect data"), "{error}");
        let mut forever = Backoff::forever(Duration::from_secs(1));
        for _ in 0..100 {
            assert!(forever.failed(bad()).is_ok());
        }
    }
}
