//! End-to-end throughput harness (not a timed test): publishes a simulated fleet to fresh topics,
//! runs the release `botmeter run` over the backlog, then measures the bare ClickHouse bulk insert
//! of the very rows the pipeline wrote (read back, inserted again into a fresh database), and
//! reports events/s, the pipeline's own CPU time per event (utime + stime of the process, rdkafka
//! included) and the ratio to the bare insert.
//!
//! Run: `scripts/services.sh up && cargo bench --bench pipeline` (BOTMETER_BENCH_INSTANCES=N runs N
//! instances in one consumer group, each row counted once: exact per-owner totals are checked and
//! each instance's share is printed; BOTMETER_BENCH_EVENTS sets the
//! fleet size, default 1,000,000; BOTMETER_BENCH_RUNS repeats the whole measurement and judges
//! the targets on the median; BOTMETER_BENCH_QUIET_SECS sets the quiet before each measured phase
//! (see `quiet_period`); BOTMETER_BENCH_BIN runs another botmeter build, for an A/B;
//! BOTMETER_BENCH_PROFILE=<file> also records a `perf` profile of
//! the pipeline). Results go to BENCHMARKS.md by hand, with the machine.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use simulate::{generate, publish, FleetConfig};
#[path = "support/proc.rs"]
mod proc;
#[path = "support/targets.rs"]
mod targets;
use proc::{cpu_seconds, status_mb};
use query::rows::UsageRow;
use query::{ClickHouseConfig, Writer};
use targets::{report, report_check, Bar};

fn clickhouse(url: &str, sql: &str) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--fail", url, "--data-binary", sql])
        .output()
        .expect("curl");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The local ClickHouse server's pid, when it runs on this machine (its CPU is then reported).
fn clickhouse_pid() -> Option<u32> {
    let output = Command::new("pgrep")
        .args(["-o", "-f", "clickhouse-server"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Seconds of quiet before each measured phase (BOTMETER_BENCH_QUIET_SECS, default 65). ext4
/// skips inodes freed in the last minute or so when it creates a file, reading each one's inode
/// block: after a burst of deletions (a dropped database, merges replacing parts) every part
/// ClickHouse creates costs it several times more system CPU (profiled: ~60% of its insert CPU
/// in `ext4_create` → `recently_deleted`). Each phase starts once the previous one's deletions
/// have aged out, so that runs measure botmeter and not the harness's own clean-up.
fn quiet_period() {
    let secs: u64 = std::env::var("BOTMETER_BENCH_QUIET_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(65);
    std::thread::sleep(Duration::from_secs(secs));
}

/// Waits until ClickHouse runs no merge (at most a minute), so one phase's background merges do
/// not run in the next phase's measurement.
fn wait_for_merges(url: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60)
        && clickhouse(url, "SELECT count() FROM system.merges").trim() != "0"
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One run's figures.
struct Measurement {
    pipeline_rate: f64,
    bare_rate: f64,
    cpu_per_event_us: f64,
    peak_mib: f64,
    /// Events per second of each instance over the run.
    per_instance_rate: Vec<f64>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// "median (min–max over N runs)", or the one figure.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let mut sorted = values.to_vec();
    let middle = median(&mut sorted);
    if sorted.len() == 1 {
        return show(middle);
    }
    format!(
        "median of {} runs (range {}–{})",
        sorted.len(),
        show(sorted[0]),
        show(sorted[sorted.len() - 1])
    )
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("BOTMETER_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // BOTMETER_BENCH_PARTITIONS: traffic partitions (default 4).
    let partitions: i32 = std::env::var("BOTMETER_BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    // BOTMETER_BENCH_INSTANCES=N: N instances in one consumer group share the partitions.
    let instances: usize = std::env::var("BOTMETER_BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // BOTMETER_BENCH_RUNS=N: the whole measurement N times, each on fresh topics and database;
    // the targets are judged on the median.
    let runs: usize = std::env::var("BOTMETER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut measured = Vec::with_capacity(runs);
    for run in 0..runs {
        if runs > 1 {
            println!("--- run {} of {runs}", run + 1);
        }
        measured.push(measure(run, events, partitions, instances).await);
    }
    let figure = |pick: fn(&Measurement) -> f64| -> (f64, String, Vec<f64>) {
        let mut values: Vec<f64> = measured.iter().map(pick).collect();
        let shown = spread(&values, targets::number);
        (median(&mut values), shown, values)
    };
    let (rate, rate_text, _) = figure(|m| m.pipeline_rate);
    let (ratio, ratio_text, _) = figure(|m| m.pipeline_rate / m.bare_rate);
    let (cpu, cpu_text, _) = figure(|m| m.cpu_per_event_us);
    // Memory is judged on the worst run, not the median.
    let peak = measured
        .iter()
        .map(|m| m.peak_mib * 1.048_576)
        .fold(0.0, f64::max);
    if runs > 1 {
        println!("--- over {runs} runs");
        println!("pipeline end to end          {rate_text} events/s");
        println!("ratio to bare insert         {ratio_text}");
        println!("pipeline CPU per event       {cpu_text} µs");
    }
    // The maximum rate, for the freshness harness (which runs at half of it).
    println!("median end to end            {rate:.0} events/s");
    if instances == 1 {
        report(
            "end to end, traffic events/s (default config)",
            rate,
            "events/s",
            Bar::AtLeast(200_000.0),
        );
        report(
            "end to end ÷ bare ClickHouse insert of the same rows, same run",
            ratio,
            "",
            Bar::AtLeast(0.8),
        );
        report(
            "pipeline CPU per event (process CPU, rdkafka included)",
            cpu,
            "µs",
            Bar::AtMost(2.5),
        );
        report(
            &format!(
                "peak RSS draining a {}-event backlog, worst run (flat: batch + prefetch bound it)",
                targets::number(events as f64)
            ),
            peak,
            "MB",
            Bar::AtMost(300.0),
        );
    } else {
        // Every run asserted exact totals: reaching this line means they were exact.
        let shares: Vec<String> = measured[0]
            .per_instance_rate
            .iter()
            .map(|rate| targets::number(*rate))
            .collect();
        report_check(
            &format!("scale-out: {instances} instances, {partitions} partitions, exact totals"),
            &format!(
                "exact; {} events/s in all, per instance {} events/s",
                targets::number(rate),
                shares.join(" + ")
            ),
            "exact per-owner totals, one row per message",
            true,
        );
    }
}

/// Publishes a fleet to fresh topics, runs the pipeline over it, checks it, then times the bare
/// insert of the same rows; prints the run's figures.
async fn measure(run: usize, events: usize, partitions: i32, instances: usize) -> Measurement {
    let url =
        std::env::var("BOTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let brokers =
        std::env::var("BOTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run_id = format!("{}_{run}", std::process::id());
    let database = format!("botmeter_bench_{run_id}");
    let (control, traffic, dead) = (
        format!("bench.{run_id}.control"),
        format!("bench.{run_id}.traffic"),
        format!("bench.{run_id}.dead-letter"),
    );

    // 1. The pipeline over a published backlog.
    let fleet = generate(&FleetConfig {
        seed: 5,
        traffic_events: events,
        bot_users: 8,
        users: 4,
        ..FleetConfig::default()
    });
    ingest::admin::ensure_topics(
        &brokers,
        &[(&control, 1), (&traffic, partitions), (&dead, 1)],
    )
    .await
    .unwrap();
    let published = publish(&fleet, &brokers, &control, &traffic, None, false)
        .await
        .unwrap();
    wait_for_merges(&url);
    quiet_period();
    // The ground truth per owner (attributed bytes out), for the exact-totals check.
    let expected: String = fleet
        .truth
        .owners
        .iter()
        .filter(|(_, truth)| {
            truth.usage.bytes_out > 0
                || truth.usage.bytes_in > 0
                || truth.usage.http_requests > 0
                || truth.usage.tcp_connections > 0
        })
        .map(|(owner, truth)| {
            format!(
                "{owner}\t{}\t{}\n",
                truth.usage.bytes_out,
                truth.usage.http_requests + truth.usage.tcp_connections
            )
        })
        .collect();
    drop(fleet);
    let ops_ports: Vec<u16> = (0..instances)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    // BOTMETER_BENCH_BIN=<path>: run another build of botmeter (an A/B against an older commit).
    let binary = std::env::var("BOTMETER_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_botmeter").into());
    let spawn_instance = |ops_port: u16| {
        Command::new(&binary)
            .args(["run", "--ops-listen", &format!("127.0.0.1:{ops_port}")])
            .env("BOTMETER_CLICKHOUSE_URL", &url)
            .env("BOTMETER_CLICKHOUSE_DATABASE", &database)
            .env("BOTMETER_KAFKA_BROKERS", &brokers)
            .env("BOTMETER_CONTROL_TOPIC", &control)
            .env("BOTMETER_TRAFFIC_TOPIC", &traffic)
            .env("BOTMETER_DEAD_LETTER_TOPIC", &dead)
            .env("BOTMETER_GROUP_ID", format!("bench-{run_id}"))
            .env(
                "BOTMETER_LOG",
                std::env::var("BOTMETER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn botmeter run")
    };
    let mut child = spawn_instance(ops_ports[0]);
    let mut others: Vec<_> = ops_ports[1..]
        .iter()
        .map(|&port| spawn_instance(port))
        .collect();
    let pid = child.id();
    // BOTMETER_BENCH_PROFILE=<file>: sample the pipeline's CPU with `perf record` (cpu-clock, so it
    // works without hardware counters) for the whole run; read it with `perf report -i <file>`.
    let mut profiler = std::env::var("BOTMETER_BENCH_PROFILE").ok().map(|file| {
        Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "999",
                "-g",
                "-o",
                &file,
                "-p",
                &pid.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn perf record (Debian: linux-perf)")
    });
    let count = || {
        clickhouse(
            &url,
            &format!("SELECT count() FROM {database}.usage_events"),
        )
        .trim()
        .parse::<usize>()
        .unwrap_or(0)
    };
    let wait_started = Instant::now();
    let clickhouse_pid = clickhouse_pid();
    let clickhouse_cpu = || clickhouse_pid.map_or(0.0, cpu_seconds);
    let (mut first_at, mut cpu_at_first, mut clickhouse_cpu_at_first) = (None, 0.0, 0.0);
    loop {
        let n = if wait_started.elapsed() > Duration::from_secs(1) || first_at.is_some() {
            count()
        } else {
            0
        };
        if n > 0 && first_at.is_none() {
            first_at = Some((Instant::now(), n));
            cpu_at_first =
                cpu_seconds(pid) + others.iter().map(|c| cpu_seconds(c.id())).sum::<f64>();
            clickhouse_cpu_at_first = clickhouse_cpu();
        }
        if n >= events {
            break;
        }
        assert!(
            wait_started.elapsed() < Duration::from_secs(1800),
            "timed out at {n} rows"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (first, first_rows) = first_at.unwrap();
    let elapsed = first.elapsed();
    let cpu =
        cpu_seconds(pid) + others.iter().map(|c| cpu_seconds(c.id())).sum::<f64>() - cpu_at_first;
    let pipeline_clickhouse_cpu = clickhouse_cpu() - clickhouse_cpu_at_first;
    // Traffic events each instance consumed, from its /metrics (once the last batch's bookkeeping,
    // which follows its insert, is done).
    std::thread::sleep(Duration::from_millis(1_500));
    let per_instance: Vec<u64> = ops_ports
        .iter()
        .map(|port| {
            let output = Command::new("curl")
                .args(["-sS", &format!("http://127.0.0.1:{port}/metrics")])
                .output()
                .expect("curl");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|l| {
                    l.starts_with("botmeter_events_total{") && l.contains("topic=\"traffic\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        })
        .collect();
    let peak = status_mb(pid, "VmHWM");
    if let Some(profiler) = profiler.as_mut() {
        let _ = Command::new("kill")
            .args(["-INT", &profiler.id().to_string()])
            .status();
        let _ = profiler.wait();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    for other in &mut others {
        let _ = Command::new("kill")
            .args(["-TERM", &other.id().to_string()])
            .status();
        let _ = other.wait();
    }
    // Exact totals, whatever the number of instances.
    let stored = clickhouse(
        &url,
        &format!(
            "SELECT owner_id, sum(bytes_out * sign), sum((http_requests + tcp_connections) * sign) FROM {database}.usage_events \
             WHERE status = 'attributed' GROUP BY owner_id ORDER BY owner_id FORMAT TSV"
        ),
    );
    assert_eq!(
        stored, expected,
        "per-owner totals (owner, bytes_out, requests + connections) equal the ground truth"
    );
    let positions = clickhouse(
        &url,
        &format!("SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM {database}.usage_events FORMAT TSV"),
    );
    assert_eq!(
        positions.trim(),
        format!("{events}\t{events}"),
        "one row per message"
    );

    // 2. The bare bulk insert of the same rows (the ceiling botmeter is compared with): the rows
    // the pipeline wrote, read back in Kafka order and inserted again, as many rows per insert as
    // the pipeline's batches, into a fresh database with the same schema (rollup view included).
    let source = ClickHouseConfig {
        url: url.clone(),
        database: database.clone(),
        ..ClickHouseConfig::default()
    }
    .validate()
    .expect("a valid config");
    let rows: Vec<UsageRow> = source
        .client()
        .query("SELECT ?fields FROM usage_events ORDER BY kafka_partition, kafka_offset")
        .fetch_all()
        .await
        .expect("read the pipeline's rows back");
    assert_eq!(rows.len(), events, "rows read back");
    // The pipeline's database goes first, and its merges are let finish: the bare insert is
    // measured on an idle server.
    // The pipeline's merges are let finish and age out: the bare insert is measured on a quiet
    // server. (Its database is dropped at the end of the run, with the bare one.)
    wait_for_merges(&url);
    quiet_period();
    // Compressed or not as the pipeline was (BOTMETER_CLICKHOUSE_INSERT_COMPRESSION, inherited;
    // `auto` by default: none on loopback).
    let compress_inserts = match std::env::var("BOTMETER_CLICKHOUSE_INSERT_COMPRESSION").as_deref()
    {
        Ok("none") => false,
        Ok("lz4") => true,
        _ => !query::is_loopback_url(&url),
    };
    let bare_config = ClickHouseConfig {
        url: url.clone(),
        database: format!("{database}_bare"),
        compress_inserts,
        ..ClickHouseConfig::default()
    }
    .validate()
    .expect("a valid config");
    query::migrate(&bare_config)
        .await
        .expect("migrate the bare database");
    let writer = Writer::new(&bare_config).unwrap();
    // As many rows per insert as the pipeline's batches (BOTMETER_BATCH_MAX_ROWS, inherited).
    let batch_rows: usize = std::env::var("BOTMETER_BATCH_MAX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(botmeter::pipeline::DEFAULT_BATCH_MAX_ROWS);
    let bare_clickhouse_cpu_at_start = clickhouse_cpu();
    let started = Instant::now();
    for chunk in rows.chunks(batch_rows) {
        writer.insert_usage(chunk).await.unwrap();
    }
    let bare = started.elapsed();
    let bare_clickhouse_cpu = clickhouse_cpu() - bare_clickhouse_cpu_at_start;
    drop(rows);
    clickhouse(&url, &format!("DROP DATABASE {database}_bare"));
    clickhouse(&url, &format!("DROP DATABASE {database}"));

    let measured = (events - first_rows) as f64;
    let pipeline_rate = measured / elapsed.as_secs_f64();
    let bare_rate = events as f64 / bare.as_secs_f64();
    println!("events                       {events}");
    println!(
        "insert compression           {}",
        if compress_inserts { "lz4" } else { "none" }
    );
    println!(
        "publish                      {:.0} msg/s",
        published.messages_per_sec
    );
    println!(
        "bare ClickHouse insert       {bare_rate:.0} rows/s ({:.2} s)",
        bare.as_secs_f64()
    );
    println!("pipeline end to end          {pipeline_rate:.0} events/s ({measured} events in {:.2} s, after the first batch)", elapsed.as_secs_f64());
    println!(
        "ratio to bare insert         {:.2}",
        pipeline_rate / bare_rate
    );
    println!(
        "pipeline CPU per event       {:.2} µs",
        cpu * 1e6 / measured
    );
    if clickhouse_pid.is_some() {
        println!(
            "ClickHouse CPU per row       {:.2} µs in the pipeline run, {:.2} µs in the bare insert (its merges included)",
            pipeline_clickhouse_cpu * 1e6 / measured,
            bare_clickhouse_cpu * 1e6 / events as f64
        );
    }
    println!("pipeline peak RSS            {peak:.0} MiB (first instance)");
    println!("instances                    {instances} on {partitions} traffic partitions (exact per-owner totals checked)");
    for (index, consumed) in per_instance.iter().enumerate() {
        println!(
            "  instance {index}: {consumed} events, {:.0} events/s over the run",
            *consumed as f64 / elapsed.as_secs_f64()
        );
    }
    Measurement {
        pipeline_rate,
        bare_rate,
        cpu_per_event_us: cpu * 1e6 / measured,
        peak_mib: peak,
        per_instance_rate: per_instance
            .iter()
            .map(|consumed| *consumed as f64 / elapsed.as_secs_f64())
            .collect(),
    }
}
