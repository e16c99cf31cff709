//! How much memory the repeat window (`ingest::repeats`) takes per event id, and what a check
//! costs, at its default size: fills a window with N ngrok-style event ids (`ev_` + 27 base62
//! characters) at 1000 events per second of event time, reads the process's resident memory
//! (`VmRSS` from `/proc/self/status`) before and after, then times `check` on new ids (the
//! pipeline's common case: remember and forget the oldest) and on repeats. Prints a table;
//! asserts no timing.
//!
//! ```text
//! cargo bench -p botmeter-ingest --bench repeat_window            # N = 2_000_000 (the default cap)
//! cargo bench -p botmeter-ingest --bench repeat_window -- 500000
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use botmeter_ingest::repeats::{Position, RepeatWindow, DEFAULT_MAX_IDS};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// An ngrok-style event id derived from `i`.
fn event_id(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut id = String::with_capacity(30);
    id.push_str("ev_");
    for _ in 0..27 {
        x = x
            .rotate_left(7)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(i);
        id.push(BASE62[(x % 62) as usize] as char);
    }
    id
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(DEFAULT_MAX_IDS as u64);
    // 1000 events per second of event time: N ids span N/1000 s, all inside a window that long.
    let time_us = |i: u64| (i * 1000) as i64;
    let window = Duration::from_micros(n * 1000 + 1);
    let mut repeats = RepeatWindow::new(window, n as usize);
    let before = rss_kb();
    let started = Instant::now();
    for i in 0..n {
        let position = Position {
            partition: (i % 8) as i32,
            offset: i as i64,
        };
        black_box(repeats.check(&event_id(i), time_us(i), position));
    }
    let fill = started.elapsed();
    let after = rss_kb();
    let per_id = (after.saturating_sub(before) * 1024) as f64 / n as f64;

    // New ids at the cap: each check remembers one and forgets the oldest.
    let new_ids: Vec<String> = (n..n + 1_000_000).map(event_id).collect();
    let started = Instant::now();
    for (k, id) in new_ids.iter().enumerate() {
        let i = n + k as u64;
        let position = Position {
            partition: (i % 8) as i32,
            offset: i as i64,
        };
        black_box(repeats.check(id, time_us(i), position));
    }
    let new_ns = started.elapsed().as_nanos() as f64 / new_ids.len() as f64;
    // Repeats of remembered ids, at other positions.
    let again: Vec<String> = (n + 500_000..n + 1_000_000).map(event_id).collect();
    let started = Instant::now();
    let mut found = 0_u64;
    for (k, id) in again.iter().enumerate() {
        let position = Position {
            partition: 99,
            offset: k as i64,
        };
        if !matches!(
            repeats.check(id, time_us(n), position),
            botmeter_ingest::Seen::First
        ) {
            found += 1;
        }
    }
    let repeat_ns = started.elapsed().as_nanos() as f64 / again.len() as f64;
    assert_eq!(found, again.len() as u64, "every repeat is recognized");

    println!("repeat window, {n} ids (ev_ + 27 base62 characters)");
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| ids remembered | {} |", repeats.len());
    println!(
        "| RSS growth while filling | {:.1} MB |",
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    println!("| bytes per id | {per_id:.0} |");
    println!(
        "| fill | {:.0} ns per id (incl. building the id) |",
        fill.as_nanos() as f64 / n as f64
    );
    println!("| check of a new id at the cap | {new_ns:.0} ns |");
    println!("| check of a repeat | {repeat_ns:.0} ns |");
    println!("| forgotten early (cap) | {} |", repeats.evicted_early());
}
