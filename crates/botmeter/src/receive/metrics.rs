//! The metrics of `botmeter receive`, one per question an operator asks, served on
//! `--metrics-listen` like `serve`'s.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Requests answered, by status code.
pub const REQUESTS: &str = "botmeter_receive_requests_total";
/// Firehose records received in accepted requests.
pub const RECORDS: &str = "botmeter_receive_records_total";
/// Kafka messages published and acknowledged, by topic (`control`, `traffic`, `dead_letter`).
pub const MESSAGES: &str = "botmeter_receive_messages_total";
/// Requests refused, by reason.
pub const REJECTS: &str = "botmeter_receive_rejects_total";
/// Retried requests already published (answered 200, published nothing).
pub const DUPLICATES: &str = "botmeter_receive_duplicate_requests_total";
/// Seconds from the first send of a request to its last acknowledgement.
pub const KAFKA_SECONDS: &str = "botmeter_receive_kafka_seconds";
/// Seconds to answer a request, from its headers to the answer.
pub const REQUEST_SECONDS: &str = "botmeter_receive_request_seconds";
/// Requests being processed now.
pub const IN_FLIGHT: &str = "botmeter_receive_in_flight_requests";
/// Request ids the request window remembers.
pub const WINDOW_IDS: &str = "botmeter_receive_request_window_ids";
/// Completed requests that could not be written to the request log.
pub const LOG_ERRORS: &str = "botmeter_receive_request_log_errors_total";

/// `HELP` text of every metric.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Firehose requests answered, by HTTP status"
    );
    describe_counter!(
        RECORDS,
        Unit::Count,
        "Firehose records in requests answered 200"
    );
    describe_counter!(
        MESSAGES,
        Unit::Count,
        "Kafka messages published and acknowledged, by topic (control, traffic, dead_letter)"
    );
    describe_counter!(REJECTS, Unit::Count, "Firehose requests refused, by reason");
    describe_counter!(
        DUPLICATES,
        Unit::Count,
        "Retried requests whose id had already completed: answered 200, nothing published again"
    );
    describe_histogram!(
        KAFKA_SECONDS,
        Unit::Seconds,
        "Seconds from a request's first Kafka send to its last acknowledgement"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Seconds to answer a Firehose request"
    );
    describe_gauge!(IN_FLIGHT, Unit::Count, "Firehose requests being processed");
    describe_gauge!(
        WINDOW_IDS,
        Unit::Count,
        "Completed request ids the request window holds"
    );
    describe_counter!(
        LOG_ERRORS,
        Unit::Count,
        "Completed requests that could not be recorded in the request log (a retry after a restart would be published again)"
    );
}
