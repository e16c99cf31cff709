//! Secrets out of everything botmeter keeps about a message it could not use: a dead letter's
//! payload has the value of every secret field replaced — parsed as JSON when it parses (at any
//! depth), scanned as text when it does not — and any text about it (the reason, which also goes
//! to headers and logs) has the values found replaced too. Invariant 4: credential tokens are
//! never persisted or logged.

use serde_json::Value;

/// What a secret's value becomes.
pub const REDACTED: &str = "[redacted]";

/// Whether a field of this name holds a secret: `token` (and `*_token`), anything with `secret`,
/// `password` or `private_key` in it, and `api_key`; case-insensitive.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "token"
        || key.ends_with("_token")
        || key == "api_key"
        || key.contains("secret")
        || key.contains("password")
        || key.contains("private_key")
}

/// A payload with its secrets replaced, and the secret values that were found (to be removed
/// from any text about it). A payload without secrets is returned unchanged.
pub fn redact_payload(payload: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut secrets = Vec::new();
    if let Ok(mut value) = serde_json::from_slice::<Value>(payload) {
        redact_value(&mut value, &mut secrets);
        if secrets.is_empty() {
            return (payload.to_vec(), secrets);
        }
        let redacted = serde_json::to_vec(&value).unwrap_or_else(|_| REDACTED.as_bytes().to_vec());
        return (redacted, secrets);
    }
    let redacted = redact_bytes(payload, &mut secrets);
    (redacted, secrets)
}

/// `text` with every occurrence of `secrets` replaced.
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), REDACTED);
    }
    text
}

fn redact_value(value: &mut Value, secrets: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if is_secret_key(key) && !field.is_null() {
                    collect(field, secrets);
                    *field = Value::String(REDACTED.to_owned());
                } else {
                    redact_value(field, secrets);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| redact_value(item, secrets)),
        _ => {}
    }
}

/// Every scalar inside a secret's value, as text (a secret may be an object of parts).
fn collect(value: &Value, secrets: &mut Vec<String>) {
    match value {
        Value::String(s) => secrets.push(s.clone()),
        Value::Object(map) => map.values().for_each(|v| collect(v, secrets)),
        Value::Array(items) => items.iter().for_each(|v| collect(v, secrets)),
        Value::Null => {}
        other => secrets.push(other.to_string()),
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The textual scan for a payload that is not JSON: every `key` (a word, optionally quoted)
/// followed by `:` or `=` whose name is a secret has its value — quoted up to the closing quote,
/// or bare up to a delimiter — replaced.
fn redact_bytes(payload: &[u8], secrets: &mut Vec<String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut i = 0;
    while i < payload.len() {
        let starts_word = is_word_byte(payload[i]) && (i == 0 || !is_word_byte(payload[i - 1]));
        if !starts_word {
            out.push(payload[i]);
            i += 1;
            continue;
        }
        let end = payload[i..]
            .iter()
            .position(|&b| !is_word_byte(b))
            .map_or(payload.len(), |n| i + n);
        out.extend_from_slice(&payload[i..end]);
        let key = String::from_utf8_lossy(&payload[i..end]);
        i = end;
        if !is_secret_key(&key) {
            continue;
        }
        if let Some((value_start, value_end)) = secret_value(payload, end) {
            out.extend_from_slice(&payload[end..value_start]);
            secrets.push(String::from_utf8_lossy(&payload[value_start..value_end]).into_owned());
            out.extend_from_slice(REDACTED.as_bytes());
            i = value_end;
        }
    }
    out
}

/// After a key ending at `at`: the byte range of its value, if `:` or `=` follows (after an
/// optional closing quote and spaces). A quoted value's range is inside its quotes.
fn secret_value(payload: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let skip_spaces = |mut at: usize| {
        while payload.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
            at += 1;
        }
        at
    };
    if matches!(payload.get(at), Some(b'"' | b'\'')) {
        at += 1;
    }
    at = skip_spaces(at);
    if !matches!(payload.get(at), Some(b':' | b'=')) {
        return None;
    }
    at = skip_spaces(at + 1);
    match payload.get(at) {
        Some(&quote @ (b'"' | b'\'')) => {
            let start = at + 1;
            let mut end = start;
            while end < payload.len() && payload[end] != quote {
                end += if payload[end] == b'\\' { 2 } else { 1 };
            }
            Some((start, end.min(payload.len())))
        }
        Some(_) => {
            let end = payload[at..]
                .iter()
                .position(|&b| b",}]&;".contains(&b) || b.is_ascii_whitespace())
                .map_or(payload.len(), |n| at + n);
            (end > at).then_some((at, end))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(payload: &str) -> (String, Vec<String>) {
        let (bytes, secrets) = redact_payload(payload.as_bytes());
        (String::from_utf8(bytes).unwrap(), secrets)
    }

    #[test]
    fn secret_names_match_case_insensitively() {
        for key in [
            "token",
            "TOKEN",
            "auth_token",
            "secret",
            "client_secret",
            "aws_secret_access_key",
            "Password",
            "private_key",
            "api_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "token_id",
            "id",
            "owner_id",
            "description",
            "acl",
            "tokens_used",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn json_secrets_are_replaced_at_any_depth_and_nothing_else_changes() {
        let payload = r#"{"event_id":"ev_1","object":{"id":"cr_1","Token":"tok_AAA","acl":{"x":1},"nested":[{"client_secret":"cs_BBB"}],"password":{"v":"pw_CCC"}}}"#;
        let (text, secrets) = redacted(payload);
        for secret in ["tok_AAA", "cs_BBB", "pw_CCC"] {
            assert!(!text.contains(secret), "{text}");
            assert!(secrets.iter().any(|s| s == secret), "{secrets:?}");
        }
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["object"]["Token"], REDACTED);
        assert_eq!(value["object"]["acl"]["x"], 1);
        assert_eq!(value["event_id"], "ev_1");
        let clean = r#"{"b":1,   "a":2}"#;
        assert_eq!(
            redacted(clean),
            (clean.to_owned(), Vec::new()),
            "untouched bytes"
        );
    }

    #[test]
    fn text_that_is_not_json_is_scanned_for_the_same_keys() {
        for (payload, secret) in [
            (r#"{"id":"cr_1","token":"tok_DDD","acl":"#, "tok_DDD"),
            (r#"{"id":"cr_1", "token" : "tok_D\"EE", "#, "tok_D\\\"EE"),
            ("token=tok_FFF&x=1", "tok_FFF"),
            ("garbage secret: sk_GGG more", "sk_GGG"),
            (r#"{'private_key': 'pk_HHH'"#, "pk_HHH"),
            (r#"{"token":"tok_unterminated"#, "tok_unterminated"),
        ] {
            let (text, secrets) = redacted(payload);
            assert!(!text.contains(secret), "{payload} → {text}");
            assert!(text.contains(REDACTED), "{payload} → {text}");
            assert_eq!(secrets, [secret], "{payload}");
        }
        let (text, secrets) = redacted("tokenizer: plain words, no = secret here");
        assert!(
            secrets.is_empty() && text.starts_with("tokenizer"),
            "{text}"
        );
    }

    #[test]
    fn reasons_lose_the_values_found() {
        let secrets = vec!["tok_AAA".to_owned(), String::new()];
        assert_eq!(
            redact_text("field object.token: found \"tok_AAA\"", &secrets),
            "field object.token: found \"[redacted]\""
        );
    }
}
