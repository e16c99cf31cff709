//! Amazon Data Firehose's HTTP endpoint delivery protocol, version 1.0, as `botmeter receive`
//! speaks it: the request body (`requestId`, `timestamp` in ms, up to 10,000 base64 `records`,
//! optionally gzipped), the response body (`requestId`, `timestamp`, `errorMessage` on failure),
//! and [`decode`], which turns a whole body into the Kafka messages to publish — or into one
//! [`Reject`] naming what is wrong, before anything is published (never half a request).
//!
//! Firehose counts only 200 as delivered; its specification counts 413 as permanent (not retried), every
//! other status is retried with the same request id until the stream's retry duration ends.

use std::borrow::Cow;
use std::io::Read as _;
use std::ops::Range;

use axum::http::StatusCode;
use base64::Engine as _;
use model::route::{route, Destination};
use model::{DeadLetter, SourcePosition};
use serde::{Deserialize, Serialize};

/// The request id; the same on every attempt of one request.
pub const REQUEST_ID_HEADER: &str = "x-amz-firehose-request-id";
/// The access key configured on the Firehose stream.
pub const ACCESS_KEY_HEADER: &str = "x-amz-firehose-access-key";
/// `1.0`.
pub const PROTOCOL_VERSION_HEADER: &str = "x-amz-firehose-protocol-version";
/// JSON `{"commonAttributes": {…}}` configured on the stream.
pub const COMMON_ATTRIBUTES_HEADER: &str = "x-amz-firehose-common-attributes";
/// Most records in one request (the protocol's limit).
pub const MAX_RECORDS: usize = 10_000;
/// What Firehose dead letters name as their source topic: they come from a request, not Kafka.
pub const DEAD_LETTER_SOURCE: &str = "firehose";
/// Longest request id accepted (Firehose sends a 36-character GUID).
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A request body. Unknown fields are ignored.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirehoseRequest<'a> {
    /// Equals the `X-Amz-Firehose-Request-Id` header.
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    /// When Firehose sent it, ms since the epoch.
    pub timestamp: i64,
    /// The records.
    #[serde(borrow)]
    pub records: Vec<FirehoseRecord<'a>>,
}

/// One record: base64 of the bytes ngrok put into the stream (one event, maybe more).
#[derive(Debug, Deserialize, Serialize)]
pub struct FirehoseRecord<'a> {
    /// Base64 (standard alphabet, padded).
    #[serde(borrow)]
    pub data: Cow<'a, str>,
}

/// A response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirehoseResponse {
    /// The request's id (empty when the request had none).
    pub request_id: String,
    /// When the request was answered, ms since the epoch.
    pub timestamp: i64,
    /// Why it failed; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Why a request is refused: a status Firehose understands, a metric label and a message that
/// names the field and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The HTTP status.
    pub status: StatusCode,
    /// Reason class (metric label), e.g. `invalid_base64`.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Reject {
    /// 400: the request cannot be meant; retrying it will not help, but Firehose retries anyway
    /// (then backs it up to S3).
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    /// Any status.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }

    /// 413: over `--max-body-bytes`.
    pub fn too_large(what: &str, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("{what} is larger than the limit of {limit} bytes (--max-body-bytes)"),
        )
    }
}

/// Checks a request id: 1 to 128 printable ASCII characters.
pub fn check_request_id(id: &str) -> Result<(), Reject> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_CHARS || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        let shown: String = id.chars().take(MAX_REQUEST_ID_CHARS).collect();
        return Err(Reject::bad_request(
            "invalid_request_id",
            format!(
                "header X-Amz-Firehose-Request-Id: expected 1 to {MAX_REQUEST_ID_CHARS} printable ASCII characters, found {shown:?}"
            ),
        ));
    }
    Ok(())
}

/// The body as JSON bytes: gunzipped when `gzip`, never past `limit` bytes.
pub fn decompress(body: &[u8], gzip: bool, limit: usize) -> Result<Cow<'_, [u8]>, Reject> {
    if !gzip {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // One byte past the limit tells "exactly the limit" from "more".
    let read = flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Ok(_) if out.len() > limit => Err(Reject::too_large("the gunzipped body", limit)),
        Ok(_) => Ok(Cow::Owned(out)),
        Err(e) => Err(Reject::bad_request(
            "invalid_gzip",
            format!("body: Content-Encoding is gzip but the body is not valid gzip: {e}"),
        )),
    }
}

/// One Kafka message of a request: an event for the control or traffic topic, or a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// An ngrok event.
    Event {
        /// Control or traffic.
        destination: Destination,
        /// Message key.
        key: String,
        /// Which decoded record holds it.
        record: usize,
        /// Its bytes within the record.
        range: Range<usize>,
    },
    /// Something in a record that is not an ngrok event.
    DeadLetter(Box<DeadLetter>),
}

/// A decoded request: the records' bytes and the messages cut from them.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Each record, base64-decoded.
    pub records: Vec<Vec<u8>>,
    /// What to publish, in record order.
    pub messages: Vec<Outgoing>,
}

impl Decoded {
    /// The payload of `message`.
    pub fn payload<'a>(&'a self, message: &'a Outgoing) -> &'a [u8] {
        match message {
            Outgoing::Event { record, range, .. } => &self.records[*record][range.clone()],
            Outgoing::DeadLetter(letter) => &letter.payload,
        }
    }
}

/// Parses the (decompressed) body of request `request_id` and cuts its records into messages.
/// Any problem with the body or a record's base64 refuses the whole request; a record that
/// decodes but holds something other than ngrok events becomes dead letters.
pub fn decode(json: &[u8], request_id: &str) -> Result<Decoded, Reject> {
    let request: FirehoseRequest<'_> = serde_json::from_slice(json).map_err(|e| {
        Reject::bad_request(
            "malformed_body",
            format!("body: not a Firehose request (requestId, timestamp, records[].data): {e}"),
        )
    })?;
    if request.request_id != request_id {
        return Err(Reject::bad_request(
            "request_id_mismatch",
            format!(
                "body: requestId {:?} differs from header X-Amz-Firehose-Request-Id {request_id:?}",
                request.request_id
            ),
        ));
    }
    if request.records.len() > MAX_RECORDS {
        return Err(Reject::bad_request(
            "too_many_records",
            format!(
                "body: records holds {} records, more than the protocol's {MAX_RECORDS}",
                request.records.len()
            ),
        ));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let mut decoded = Decoded {
        records: Vec::with_capacity(request.records.len()),
        messages: Vec::with_capacity(request.records.len()),
    };
    for (index, record) in request.records.iter().enumerate() {
        let bytes = engine.decode(record.data.as_bytes()).map_err(|e| {
            Reject::bad_request(
                "invalid_base64",
                format!("body: records[{index}].data is not base64: {e}"),
            )
        })?;
        decoded.records.push(bytes);
    }
    drop(request);
    for index in 0..decoded.records.len() {
        let mut messages = Vec::new();
        cut_record(&decoded.records[index], index, request_id, &mut messages);
        decoded.messages.append(&mut messages);
    }
    Ok(decoded)
}

/// Cuts record `index` into its events: one event, or several separated by newlines (a trailing
/// newline is fine). A line that is not an event is a dead letter; a record with several lines
/// that is one JSON value spread over them (pretty-printed) is that value.
fn cut_record(record: &[u8], index: usize, request_id: &str, out: &mut Vec<Outgoing>) {
    let lines = lines(record);
    if lines.len() > 1 {
        let routed: Vec<_> = lines.iter().map(|r| route(&record[r.clone()])).collect();
        if routed.iter().any(Result::is_err) {
            // Maybe one value over several lines: route the record as a whole.
            let whole = trim(record, 0..record.len());
            if let Ok(one) = route(&record[whole.clone()]) {
                out.push(Outgoing::Event {
                    destination: one.destination,
                    key: one.key.into_owned(),
                    record: index,
                    range: whole,
                });
                return;
            }
        }
        for (range, routed) in lines.into_iter().zip(routed) {
            out.push(outgoing(record, index, request_id, range, routed));
        }
        return;
    }
    let range = lines
        .into_iter()
        .next()
        .unwrap_or_else(|| trim(record, 0..record.len()));
    let routed = route(&record[range.clone()]);
    out.push(outgoing(record, index, request_id, range, routed));
}

fn outgoing(
    record: &[u8],
    index: usize,
    request_id: &str,
    range: Range<usize>,
    routed: Result<model::route::Route<'_>, model::route::NotAnEvent>,
) -> Outgoing {
    match routed {
        Ok(route) => Outgoing::Event {
            destination: route.destination,
            key: route.key.into_owned(),
            record: index,
            range,
        },
        Err(not_an_event) => Outgoing::DeadLetter(Box::new(DeadLetter::new(
            SourcePosition {
                topic: DEAD_LETTER_SOURCE,
                partition: -1,
                offset: index as i64,
            },
            not_an_event.kind,
            format!(
                "firehose request {request_id} record {index}: {}",
                not_an_event.reason
            ),
            &record[range],
        ))),
    }
}

/// The non-blank lines of a record, each trimmed.
fn lines(record: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in record.iter().enumerate() {
        if b == b'\n' {
            let line = trim(record, start..i);
            if !line.is_empty() {
                out.push(line);
            }
            start = i + 1;
        }
    }
    let line = trim(record, start..record.len());
    if !line.is_empty() {
        out.push(line);
    }
    out
}

/// `range` without leading and trailing ASCII whitespace.
fn trim(bytes: &[u8], range: Range<usize>) -> Range<usize> {
    let (mut start, mut end) = (range.start, range.end);
    while start < end && bytes[start].is_ascii_whitespace() {
        start += 1;
    }
    while end > start && bytes[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(request_id: &str, records: &[&[u8]]) -> Vec<u8> {
        let engine = base64::engine::general_purpose::STANDARD;
        let records: Vec<FirehoseRecord<'_>> = records
            .iter()
            .map(|r| FirehoseRecord {
                data: Cow::Owned(engine.encode(r)),
            })
            .collect();
        serde_json::to_vec(&FirehoseRequest {
            request_id: Cow::Borrowed(request_id),
            timestamp: 1,
            records,
        })
        .unwrap()
    }

    const HTTP: &str = r#"{"event_id":"ev_1","event_type":"http_request_complete.v0","object":{"conn":{"server_name":"a.example","server_port":443}}}"#;
    const CRED: &str = r#"{"event_id":"ev_2","event_type":"tunnel_credential_created.v0","object":{"id":"cr_1","owner_id":"bot_1"}}"#;

    fn events(decoded: &Decoded) -> Vec<(Destination, String, String)> {
        decoded
            .messages
            .iter()
            .filter_map(|m| match m {
                Outgoing::Event {
                    destination, key, ..
                } => Some((
                    *destination,
                    key.clone(),
                    String::from_utf8(decoded.payload(m).to_vec()).unwrap(),
                )),
                Outgoing::DeadLetter(_) => None,
            })
            .collect()
    }

    #[test]
    fn records_become_events_with_their_exact_bytes() {
        let newline_terminated = format!("{HTTP}\n");
        let two = format!("{HTTP}\n\n{CRED}\r\n");
        let json = body(
            "req-1",
            &[
                HTTP.as_bytes(),
                newline_terminated.as_bytes(),
                two.as_bytes(),
            ],
        );
        let decoded = decode(&json, "req-1").unwrap();
        let got = events(&decoded);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0],
            (Destination::Traffic, "a.example".into(), HTTP.into())
        );
        assert_eq!(got[1].2, HTTP);
        assert_eq!(got[3], (Destination::Control, "bot_1".into(), CRED.into()));
    }

    #[test]
    fn a_pretty_printed_event_is_one_event() {
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(CRED).unwrap())
                .unwrap();
        let decoded = decode(&body("r", &[pretty.as_bytes()]), "r").unwrap();
        assert_eq!(events(&decoded).len(), 1);
        assert_eq!(decoded.messages.len(), 1);
    }

    #[test]
    fn what_is_not_an_event_is_dead_lettered_with_its_place() {
        let mixed = format!("{HTTP}\nnot json at all\n");
        let json = body("req-9", &[b"hello", mixed.as_bytes(), b"  "]);
        let decoded = decode(&json, "req-9").unwrap();
        let letters: Vec<&DeadLetter> = decoded
            .messages
            .iter()
            .filter_map(|m| match m {
                Outgoing::DeadLetter(l) => Some(l.as_ref()),
                Outgoing::Event { .. } => None,
            })
            .collect();
        assert_eq!(events(&decoded).len(), 1);
        assert_eq!(letters.len(), 3);
        assert_eq!(
            (letters[0].topic.as_str(), letters[0].offset),
            ("firehose", 0)
        );
        assert_eq!(letters[0].payload, b"hello");
        assert_eq!(letters[0].reason_kind, "malformed_json");
        assert!(
            letters[1]
                .reason
                .contains("firehose request req-9 record 1"),
            "{}",
            letters[1].reason
        );
        assert_eq!(letters[1].payload, b"not json at all");
        assert_eq!(letters[2].reason_kind, "empty");
    }

    #[test]
    fn a_bad_body_refuses_the_whole_request_naming_the_field() {
        let good = body("r", &[HTTP.as_bytes()]);
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                b"{".to_vec(),
                "malformed_body",
                "body: not a Firehose request",
            ),
            (
                br#"{"requestId":"r","timestamp":1}"#.to_vec(),
                "malformed_body",
                "records",
            ),
            (good.clone(), "request_id_mismatch", "differs from header"),
            (
                br#"{"requestId":"x","timestamp":1,"records":[{"data":"aGk="},{"data":"%%%"}]}"#
                    .to_vec(),
                "invalid_base64",
                "records[1].data is not base64",
            ),
        ];
        for (json, reason, message) in cases {
            let header_id = if reason == "request_id_mismatch" {
                "other"
            } else {
                "x"
            };
            let header_id = if reason == "malformed_body" {
                "r"
            } else {
                header_id
            };
            let reject = decode(&json, header_id).unwrap_err();
            assert_eq!(reject.status, StatusCode::BAD_REQUEST);
            assert_eq!(reject.reason, reason, "{}", reject.message);
            assert!(reject.message.contains(message), "{}", reject.message);
        }
        let many = format!(
            r#"{{"requestId":"r","timestamp":1,"records":[{}]}}"#,
            vec![r#"{"data":""}"#; MAX_RECORDS + 1].join(",")
        );
        assert_eq!(
            decode(many.as_bytes(), "r").unwrap_err().reason,
            "too_many_records"
        );
    }

    #[test]
    fn gzip_is_capped_and_garbage_is_named() {
        use std::io::Write as _;
        let json = body("r", &[HTTP.as_bytes()]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&json).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress(&gz, true, json.len()).unwrap().as_ref(),
            json.as_slice()
        );
        let over = decompress(&gz, true, json.len() - 1).unwrap_err();
        assert_eq!(
            (over.status, over.reason),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
        let garbage = decompress(b"not gzip", true, 100).unwrap_err();
        assert_eq!(garbage.reason, "invalid_gzip");
        assert!(
            garbage.message.contains("not valid gzip"),
            "{}",
            garbage.message
        );
    }

    #[test]
    fn request_ids_are_short_printable_text() {
        check_request_id("e17265d6-97af-4938-982e-90d5614c4242").unwrap();
        for bad in ["", "a b", "x\n", &"a".repeat(129)] {
            assert_eq!(
                check_request_id(bad).unwrap_err().reason,
                "invalid_request_id"
            );
        }
    }
}
