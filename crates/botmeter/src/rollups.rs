//! `botmeter rollups check|rebuild`: proves the usage rollup equals the raw rows it summarises
//! (invariant 6) and repairs it when it does not. The work is in [`query::rollup`].

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use clap::{Args, Subcommand};

use crate::cli::ClickHouseArgs;

/// Flags of `botmeter rollups`.
#[derive(Debug, Args)]
pub struct RollupsArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(subcommand)]
    pub action: RollupsAction,
}

/// What to do with the rollup.
#[derive(Debug, Subcommand)]
pub enum RollupsAction {
    /// Compare the rollups with the raw rows key by key (quarter hour, status, owner, credential,
    /// endpoint; hour, status, owner, endpoint; day, status, owner) over a range; print every
    /// difference and exit 1 if there is one.
    Check {
        /// Start (inclusive, RFC 3339), widened down to a UTC day. Default: the epoch.
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// End (exclusive, RFC 3339), widened up to a UTC day. Default: the far future.
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        /// Most differences to print.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Recompute months of the rollup from the raw rows and swap each in whole. Idempotent; a
    /// month being written meanwhile can miss inserts that land during its rebuild (check again).
    Rebuild {
        /// A month to rebuild, `YYYY-MM`; repeat for more. Default: every month with rows.
        #[arg(long = "month", value_parser = parse_month)]
        months: Vec<u32>,
    },
}

/// `2026-11` → `202611`, the partition of that month.
fn parse_month(text: &str) -> Result<u32, String> {
    let date = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
        .map_err(|_| format!("expected a month as YYYY-MM, found {text:?}"))?;
    u32::try_from(date.year())
        .map(|year| year * 100 + date.month())
        .map_err(|_| format!("month {text:?} is before year 0"))
}

/// The range in Unix seconds, widened to whole UTC days and clamped to `DateTime` of
/// ClickHouse (`UInt32` seconds).
fn day_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> anyhow::Result<(u32, u32)> {
    let (from, to) = query::rollup::whole_days(
        from.map_or(0, |t| t.timestamp()),
        to.map_or(i64::from(u32::MAX), |t| t.timestamp()),
    );
    anyhow::ensure!(
        from < to,
        "--from must be before --to (after widening to whole days: {from} ≥ {to})"
    );
    let clamp = |secs: i64| u32::try_from(secs.clamp(0, i64::from(u32::MAX))).unwrap_or(u32::MAX);
    Ok((clamp(from), clamp(to)))
}

/// Runs `botmeter rollups …`.
pub async fn execute(args: RollupsArgs) -> anyhow::Result<ExitCode> {
    let config = args.clickhouse.config()?;
    match args.action {
        RollupsAction::Check { from, to, limit } => {
            let (from, to) = day_range(from, to)?;
            let differences = query::rollup::check(&config, from, to, limit)
                .await
                .context("failed to compare the rollup with usage_events")?;
            if differences.is_empty() {
                println!(
                    "{} equal usage_events in [{from}, {to}) for every key and metric",
                    query::rollup::ROLLUP_TABLES.join(", ")
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "the rollups differ from usage_events (raw − rollup), {} keys:",
                differences.len()
            );
            println!("table\tstart\tstatus\towner_id\tcredential_id\tendpoint_id\tbytes_in\tbytes_out\thttp_requests\ttcp_connections\trows");
            for d in &differences {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    d.table,
                    DateTime::from_timestamp(i64::from(d.quarter), 0)
                        .map_or_else(|| d.quarter.to_string(), |t| t.to_rfc3339()),
                    d.status,
                    d.owner_id,
                    d.credential_id,
                    d.endpoint_id,
                    d.bytes_in,
                    d.bytes_out,
                    d.http_requests,
                    d.tcp_connections,
                    d.rows
                );
            }
            println!("repair with: botmeter rollups rebuild --month YYYY-MM");
            Ok(ExitCode::from(1))
        }
        RollupsAction::Rebuild { months } => {
            let months = (!months.is_empty()).then_some(months);
            let rebuilt =
                query::rollup::rebuild(&config, months.as_deref(), |month, done, total| {
                    let rows: Vec<String> = query::rollup::ROLLUP_TABLES
                        .iter()
                        .zip(&month.rollup_rows)
                        .map(|(table, rows)| format!("{table} {rows} rows"))
                        .collect();
                    eprintln!(
                        "[{done}/{total}] month {}: {}",
                        month.month,
                        rows.join(", ")
                    );
                })
                .await
                .context("failed to rebuild the rollup")?;
            println!(
                "rebuilt {} month(s) of {} from usage_events",
                rebuilt.len(),
                query::rollup::ROLLUP_TABLES.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_to_partitions() {
        assert_eq!(parse_month("2026-11"), Ok(202_611));
        assert_eq!(parse_month("1999-01"), Ok(199_901));
        for bad in ["2026-13", "2026", "11-2026", "2026-1x", ""] {
            let err = parse_month(bad).unwrap_err();
            assert!(err.contains("YYYY-MM") && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn ranges_widen_to_whole_days() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let (from, to) = day_range(t("2026-01-01T00:14:59Z"), t("2026-01-01T01:00:01Z")).unwrap();
        assert_eq!((from, to), (1_767_225_600, 1_767_225_600 + 86_400));
        assert_eq!(day_range(None, None).unwrap(), (0, u32::MAX));
        assert!(day_range(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:00:00Z")).is_err());
    }
}
