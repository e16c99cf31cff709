//! Fuzzing, bounded so that it runs in CI: the decoder and the bind-rule parser fed hostile input
//! through proptest.
//!
//! - arbitrary bytes, and bytes a few edits away from a real example: [`decode`] never panics and
//!   every error names a field and a reason;
//! - structure-aware: each example of `schemas/events/examples/` with its JSON mutated (nodes
//!   replaced by random JSON — negative, huge and fractional numbers, numbers no machine type
//!   holds, unicode strings, nulls, arrays, nested objects —, by huge strings (up to 70k
//!   repetitions), keys deleted, keys inserted): the same two promises;
//! - [`BindRule::parse`] on arbitrary and on rule-shaped strings never panics, and what it accepts
//!   re-parses from its `Display` to the same rule (so `Display` is the canonical form).
//!
//! The case counts keep the whole file within ~30 s in a debug build. Set `PROPTEST_CASES` to run
//! every property longer, e.g. `PROPTEST_CASES=200000 cargo nextest run -p botmeter-model --test
//! fuzz_decode`. Coverage-guided fuzzing of the same entry points lives in `fuzz/` (cargo fuzz).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use botmeter_model::{decode, BindRule, DecodeError};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

/// `PROPTEST_CASES` when set, else this property's CI default.
fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Every example, by file name, as bytes and as JSON.
static EXAMPLES: LazyLock<Vec<(String, Vec<u8>, Value)>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events/examples");
    let mut out: Vec<(String, Vec<u8>, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let json = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                bytes,
                json,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 20,
        "expected the examples of every event type in {}",
        dir.display()
    );
    out
});

/// Keys worth inserting: every key of every example (the decoder looks for these), plus a few.
static KEYS: LazyLock<Vec<String>> = LazyLock::new(|| {
    fn walk(value: &Value, keys: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    keys.insert(k.clone());
                    walk(v, keys);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, keys)),
            _ => {}
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    for (_, _, json) in EXAMPLES.iter() {
        walk(json, &mut keys);
    }
    keys.extend(
        [
            "",
            "EVENT_ID",
            "event_id ",
            "__proto__",
            "🦀",
            "owner",
            "acl",
        ]
        .map(str::to_owned),
    );
    keys.into_iter().collect()
});

/// The decoder's promise: no panic (proptest reports one as a failure), and an error always says
/// which field and why.
fn check_decode(payload: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = decode(payload) {
        let DecodeError { field, reason, .. } = &e;
        prop_assert!(!field.is_empty(), "empty field in {e:?}");
        prop_assert!(!reason.is_empty(), "empty reason in {e:?}");
        prop_assert!(!e.to_string().is_empty());
        let _ = e.kind();
    }
    Ok(())
}

/// Marks a string leaf to be written as raw JSON number text (numbers `Value` cannot hold).
const RAW_NUMBER: &str = "\u{1}raw-number:";

/// Serializes `value`, writing the marked strings as the raw number text they carry.
fn to_json_bytes(value: &Value) -> Vec<u8> {
    let text = serde_json::to_string(value).expect("a Value always serializes");
    let marker = "\"\\u0001raw-number:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(marker) {
        out.push_str(&rest[..start]);
        let after = &rest[start + marker.len()..];
        let end = after.find('"').expect("a marked string is closed");
        out.push_str(&after[..end]);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// Strings the decoder has opinions about: timestamps, ports, ids, rules, methods, empties.
const INTERESTING_STRINGS: &[&str] = &[
    "",
    " ",
    "-5",
    "0",
    "80",
    "65536",
    "1e3",
    "null",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456789+05:30",
    "2026-13-01T00:00:00Z",
    "2026-02-30T25:61:61Z",
    "0000-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "1970-01-01",
    "usr_2Xyz",
    "bot_2Xyz",
    "cr_1",
    "ts_1",
    "ep_1",
    "ak_1",
    "http_request_complete.v0",
    "tcp_connection_closed.v0",
    "tunnel_credential_created.v0",
    "endpoint_created.v0",
    "bot_user_deleted.v0",
    "GET",
    "get",
    "HTTP/1.1",
    "tcp://1.tcp.ngrok.io:20002",
    "https://x.ngrok.app",
    "1.tcp.ngrok.io:20002",
    "bind:*.example.com",
    "bind:bad host",
    "*",
    "\u{0}",
    "\u{feff}",
    "é\u{301}",
    "👩‍💻",
];

fn leaf() -> impl Strategy<Value = Value> {
    let raw = |text: &'static str| Value::String(format!("{RAW_NUMBER}{text}"));
    prop_oneof![
        2 => Just(Value::Null),
        2 => any::<bool>().prop_map(Value::Bool),
        2 => any::<i64>().prop_map(Value::from),
        2 => any::<u64>().prop_map(Value::from),
        3 => prop_oneof![Just(-1_i64), Just(0), Just(-5), Just(1), Just(65_536), Just(i64::MIN), Just(i64::MAX)].prop_map(Value::from),
        1 => Just(Value::from(u64::MAX)),
        2 => any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        2 => prop_oneof![
            Just("1e400"),
            Just("-1e400"),
            Just("1.5e-400"),
            Just("-0"),
            Just("-0.0"),
            Just("123456789012345678901234567890"),
            Just("18446744073709551616"),
            Just("-9223372036854775809"),
        ]
        .prop_map(raw),
        3 => any::<String>().prop_map(Value::String),
        4 => proptest::sample::select(INTERESTING_STRINGS).prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(KEYS.clone()), 1 => any::<String>()]
}

/// Random JSON: leaves, arrays and objects nested up to 4 deep.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..6)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit of a JSON document. `at` picks a node (pre-order, modulo the node count at the time
/// the edit applies), so a sequence of edits stays meaningful as the document changes.
#[derive(Debug, Clone)]
enum Mutation {
    /// The node becomes this value (the whole document, when the root is picked).
    Replace { at: usize, with: Value },
    /// An object loses one key, an array one element; a scalar becomes null.
    Delete { at: usize, which: usize },
    /// An object gains (or overwrites) a key, an array an element; a scalar becomes `{key: value}`.
    Insert {
        at: usize,
        key: String,
        value: Value,
    },
    /// The node becomes a huge string: `repeat` times `unit`. Its own, rarer edit rather than a
    /// leaf of [`json`]: huge strings dominate the run time in a debug build.
    Huge {
        at: usize,
        unit: String,
        repeat: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), json()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(at, which)| Mutation::Delete { at, which }),
        4 => (any::<usize>(), key(), json()).prop_map(|(at, key, value)| Mutation::Insert { at, key, value }),
        1 => (any::<usize>(), prop_oneof![any::<char>().prop_map(String::from), "\\PC{1,4}", Just("\u{0}".to_owned())], 1_000_usize..70_000)
            .prop_map(|(at, unit, repeat)| Mutation::Huge { at, unit, repeat }),
    ]
}

fn node_count(value: &Value) -> usize {
    1 + match value {
        Value::Object(map) => map.values().map(node_count).sum(),
        Value::Array(items) => items.iter().map(node_count).sum(),
        _ => 0,
    }
}

/// The `n`th node in pre-order (`n < node_count(value)`).
fn nth_node(value: &mut Value, n: usize) -> &mut Value {
    if n == 0 {
        return value;
    }
    let mut n = n - 1;
    let children: Box<dyn Iterator<Item = &mut Value>> = match value {
        Value::Object(map) => Box::new(map.values_mut()),
        Value::Array(items) => Box::new(items.iter_mut()),
        _ => unreachable!("a scalar has no node {n}"),
    };
    for child in children {
        let size = node_count(child);
        if n < size {
            return nth_node(child, n);
        }
        n -= size;
    }
    unreachable!("node index out of range")
}

fn apply(doc: &mut Value, mutation: &Mutation) {
    let (Mutation::Replace { at, .. }
    | Mutation::Delete { at, .. }
    | Mutation::Insert { at, .. }
    | Mutation::Huge { at, .. }) = mutation;
    let node = nth_node(doc, at % node_count(doc));
    match mutation {
        Mutation::Replace { with, .. } => *node = with.clone(),
        Mutation::Delete { which, .. } => match node {
            Value::Object(map) if !map.is_empty() => {
                let key = map
                    .keys()
                    .nth(which % map.len())
                    .cloned()
                    .expect("in range");
                map.remove(&key);
            }
            Value::Array(items) if !items.is_empty() => {
                items.remove(which % items.len());
            }
            _ => *node = Value::Null,
        },
        Mutation::Insert { key, value, .. } => match node {
            Value::Object(map) => {
                map.insert(key.clone(), value.clone());
            }
            Value::Array(items) => items.push(value.clone()),
            scalar => *scalar = serde_json::json!({ key.clone(): value.clone() }),
        },
        Mutation::Huge { unit, repeat, .. } => *node = Value::String(unit.repeat(*repeat)),
    }
}

/// A byte-level edit of a payload; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum ByteEdit {
    Overwrite(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let byte = prop_oneof![
        any::<u8>(),
        proptest::sample::select(b"{}[]\",:-0123456789.eEtrufalsn\\ ".to_vec())
    ];
    prop_oneof![
        3 => (any::<usize>(), byte.clone()).prop_map(|(i, b)| ByteEdit::Overwrite(i, b)),
        3 => (any::<usize>(), byte).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        3 => any::<usize>().prop_map(ByteEdit::Remove),
        1 => any::<usize>().prop_map(ByteEdit::Truncate),
    ]
}

fn edit_bytes(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    let len = bytes.len();
    match *edit {
        ByteEdit::Overwrite(i, b) if len > 0 => bytes[i % len] = b,
        ByteEdit::Insert(i, b) => bytes.insert(i % (len + 1), b),
        ByteEdit::Remove(i) if len > 0 => {
            bytes.remove(i % len);
        }
        ByteEdit::Truncate(i) => bytes.truncate(i % (len + 1)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(payload in vec(any::<u8>(), 0..256)) {
        check_decode(&payload)?;
    }

    #[test]
    fn decode_never_panics_near_an_example(example in 0..EXAMPLES.len(), edits in vec(byte_edit(), 1..12)) {
        let mut payload = EXAMPLES[example].1.clone();
        for edit in &edits {
            edit_bytes(&mut payload, edit);
        }
        check_decode(&payload)?;
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn decode_never_panics_on_mutated_examples(example in 0..EXAMPLES.len(), mutations in vec(mutation(), 1..6)) {
        let mut doc = EXAMPLES[example].2.clone();
        for m in &mutations {
            apply(&mut doc, m);
        }
        check_decode(&to_json_bytes(&doc))?;
    }
}

/// Pieces of rules, valid and not, so that random concatenations often parse.
const RULE_PIECES: &[&str] = &[
    "*",
    "*.",
    ".",
    "..",
    ":",
    "=",
    "-",
    "_",
    " ",
    "\t",
    "bind:",
    "a",
    "Z",
    "ngrok",
    "io",
    "example",
    "com",
    "1",
    "0",
    "20002",
    "65535",
    "65536",
    "99999",
    "+80",
    "-1",
    "é",
    "\u{2003}",
    "\u{0}",
    "[::1]",
    "👩‍💻",
    "host name",
    "k",
    "v",
];

fn rule_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        proptest::sample::select(RULE_PIECES).prop_map(str::to_owned),
        "[a-z0-9-]{1,10}",
        "\\PC{1,3}"
    ];
    (
        proptest::sample::select(&["bind:", "bind:", "bind:", "BIND:", " bind:", "", "*"][..]),
        vec(piece, 0..8),
        proptest::sample::select(&["", "", " ", "\n"][..]),
    )
        .prop_map(|(prefix, pieces, suffix)| format!("{prefix}{}{suffix}", pieces.concat()))
}

proptest! {
    #![proptest_config(config(6_000))]

    #[test]
    fn bind_rule_parse_never_panics_and_display_round_trips(
        rule in prop_oneof![1 => any::<String>(), 3 => rule_like()],
        host in prop_oneof![any::<String>(), "[a-z*.]{0,20}"],
        port in proptest::option::of(any::<u16>()),
    ) {
        match BindRule::parse(&rule) {
            Ok(parsed) => {
                let shown = parsed.to_string();
                prop_assert_eq!(BindRule::parse(&shown), Ok(parsed.clone()), "{:?} parsed, but its Display {:?} does not re-parse to it", rule, shown);
                // Matching anything against an accepted rule never panics either.
                let labels: BTreeMap<String, String> = [(host.clone(), host.clone())].into();
                let _ = parsed.matches(&host, port, &labels);
            }
            Err(e) => {
                prop_assert_eq!(&e.rule, &rule);
                prop_assert!(!e.reason.is_empty());
            }
        }
    }
}

#[test]
fn every_example_decodes_and_survives_the_harness_unchanged() {
    // The harness itself: serializing an unmutated example keeps it decodable, so the mutations
    // above start from valid input.
    for (name, _, json) in EXAMPLES.iter() {
        decode(&to_json_bytes(json)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let marked = serde_json::json!({ "n": format!("{RAW_NUMBER}1e400") });
    assert_eq!(to_json_bytes(&marked), br#"{"n":1e400}"#);
}
