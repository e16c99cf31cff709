//! The ClickHouse `query_id`s botmeter gives its statements, and killing a statement by its id:
//! how an insert the client gave up on is fenced ([`crate::Writer::fence`]) and how an abandoned
//! API read is cancelled on the server (`api::reads`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use clickhouse::Client;

/// A fresh id, unique across processes and restarts: `botmeter-<pid>-<start, µs>-<n>`.
pub fn new_query_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        format!(
            "botmeter-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        )
    });
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether [`kill`] waits for the statement to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// `KILL QUERY … SYNC`: answers once the statement is gone.
    Sync,
    /// `KILL QUERY … ASYNC`: answers at once.
    Async,
}

/// `KILL QUERY WHERE query_id = <query_id>` (a no-op for a statement that already ended).
pub(crate) async fn kill(
    client: &Client,
    query_id: &str,
    wait: Wait,
) -> clickhouse::error::Result<()> {
    let sql = match wait {
        Wait::Sync => "KILL QUERY WHERE query_id = ? SYNC",
        Wait::Async => "KILL QUERY WHERE query_id = ? ASYNC",
    };
    client.query(sql).bind(query_id).execute().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ids_are_unique_and_name_the_process() {
        let (a, b) = (new_query_id(), new_query_id());
        assert_ne!(a, b);
        assert!(
            a.starts_with(&format!("botmeter-{}-", std::process::id())),
            "{a}"
        );
    }
}
