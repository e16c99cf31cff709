//! A client shaped like Amazon Data Firehose's HTTP endpoint delivery, for the tests of
//! `botmeter receive` and its benchmark (`benches/receive.rs` includes this file): it batches
//! events into requests (at most 10,000 records and a byte budget), one event per record,
//! newline-terminated, or several per record; gzips the body when asked; sends with the protocol's
//! headers; retries a request with the same request id until it is answered 200 (413 is final,
//! as for Firehose); and sends what Firehose never would: wrong keys and bad bodies.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;
use rand::Rng as _;

/// One request: its id (kept across retries) and its records.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) request_id: String,
    pub(crate) records: Vec<Vec<u8>>,
}

/// An answer: status, the parsed Firehose response body, and `Retry-After` if any.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: serde_json::Value,
}

impl Reply {
    /// The response's `errorMessage`, or "".
    pub(crate) fn error_message(&self) -> &str {
        self.body["errorMessage"].as_str().unwrap_or_default()
    }
}

/// The client.
#[derive(Debug, Clone)]
pub(crate) struct FirehoseClient {
    http: reqwest::Client,
    /// Endpoint URL.
    pub(crate) url: String,
    /// Sent as `X-Amz-Firehose-Access-Key`.
    pub(crate) access_key: String,
    /// Gzip bodies (`Content-Encoding: gzip`).
    pub(crate) gzip: bool,
    /// Most records per request.
    pub(crate) max_records: usize,
    /// Most record bytes (before base64) per request.
    pub(crate) max_record_bytes: usize,
    /// Events per record (ngrok sends one; 2+ joins them with newlines).
    pub(crate) events_per_record: usize,
}

/// A fresh request id, shaped like Firehose's GUIDs.
pub(crate) fn request_id() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        rng.gen::<u32>(),
        rng.gen::<u16>(),
        rng.gen::<u16>(),
        rng.gen::<u16>(),
        rng.gen::<u64>() & 0xffff_ffff_ffff
    )
}

impl FirehoseClient {
    /// A client of `url` with `access_key`: gzip on, 500 records or 1 MiB per request, one event
    /// per record.
    pub(crate) fn new(url: &str, access_key: &str) -> Self {
        Self::with_http(reqwest::Client::new(), url, access_key)
    }

    /// The same with a given HTTP client (e.g. one trusting a test certificate).
    pub(crate) fn with_http(http: reqwest::Client, url: &str, access_key: &str) -> Self {
        Self {
            http,
            url: url.to_owned(),
            access_key: access_key.to_owned(),
            gzip: true,
            max_records: 500,
            max_record_bytes: 1 << 20,
            events_per_record: 1,
        }
    }

    /// Cuts `events` into requests, in order.
    pub(crate) fn batches<'a>(&self, events: impl IntoIterator<Item = &'a [u8]>) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        let mut record: Vec<u8> = Vec::new();
        let mut in_record = 0;
        let flush_record = |record: &mut Vec<u8>, records: &mut Vec<Vec<u8>>, bytes: &mut usize| {
            if !record.is_empty() {
                *bytes += record.len();
                records.push(std::mem::take(record));
            }
        };
        for event in events {
            record.extend_from_slice(event);
            record.push(b'\n');
            in_record += 1;
            if in_record >= self.events_per_record {
                flush_record(&mut record, &mut records, &mut bytes);
                in_record = 0;
            }
            if records.len() >= self.max_records || bytes >= self.max_record_bytes {
                batches.push(Batch {
                    request_id: request_id(),
                    records: std::mem::take(&mut records),
                });
                bytes = 0;
            }
        }
        flush_record(&mut record, &mut records, &mut bytes);
        if !records.is_empty() {
            batches.push(Batch {
                request_id: request_id(),
                records,
            });
        }
        batches
    }

    /// The JSON body of `batch`.
    pub(crate) fn body(batch: &Batch) -> Vec<u8> {
        let engine = base64::engine::general_purpose::STANDARD;
        let records: Vec<serde_json::Value> = batch
            .records
            .iter()
            .map(|r| serde_json::json!({ "data": engine.encode(r) }))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "requestId": batch.request_id,
            "timestamp": chrono::Utc::now().timestamp_millis(),
            "records": records,
        }))
        .unwrap()
    }

    /// Gzips `bytes`.
    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// One attempt at `batch`.
    pub(crate) async fn send(&self, batch: &Batch) -> Result<Reply, reqwest::Error> {
        let body = Self::body(batch);
        let body = if self.gzip { Self::gzip(&body) } else { body };
        self.send_raw(&batch.request_id, Some(&self.access_key), self.gzip, body)
            .await
    }

    /// Sends `body` as is, with the protocol's headers (`access_key` `None` leaves the key out).
    pub(crate) async fn send_raw(
        &self,
        request_id: &str,
        access_key: Option<&str>,
        gzip: bool,
        body: Vec<u8>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .http
            .post(&self.url)
            .header("X-Amz-Firehose-Protocol-Version", "1.0")
            .header("X-Amz-Firehose-Request-Id", request_id)
            .header(
                "X-Amz-Firehose-Source-Arn",
                "arn:aws:firehose:us-east-1:123456789012:deliverystream/botmeter-test",
            )
            .header(
                "X-Amz-Firehose-Common-Attributes",
                r#"{"commonAttributes":{"source":"ngrok"}}"#,
            )
            .header("Content-Type", "application/json")
            .timeout(Duration::from_secs(180))
            .body(body);
        if let Some(key) = access_key {
            request = request.header("X-Amz-Firehose-Access-Key", key);
        }
        if gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(Reply { status, body })
    }

    /// Sends `batch` until it is answered 200, as Firehose does (same request id every time,
    /// backing off from 50 ms to 1 s); 413 is final. Returns the attempts it took, or the last
    /// answer after `max_attempts`.
    pub(crate) async fn deliver(&self, batch: &Batch, max_attempts: u32) -> Result<u32, Reply> {
        let mut backoff = Duration::from_millis(50);
        let mut last = None;
        for attempt in 1..=max_attempts {
            match self.send(batch).await {
                Ok(reply) if reply.status == 200 => {
                    assert_eq!(
                        reply.body["requestId"],
                        batch.request_id.as_str(),
                        "{reply:?}"
                    );
                    assert!(reply.body["timestamp"].is_i64(), "{reply:?}");
                    return Ok(attempt);
                }
                Ok(reply) if reply.status == 413 => return Err(reply),
                Ok(reply) => last = Some(reply),
                Err(e) => {
                    last = Some(Reply {
                        status: 0,
                        body: serde_json::Value::String(e.to_string()),
                    })
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        Err(last.expect("at least one attempt"))
    }
}
