//! The performance issue's targets as the harnesses report them: one line per target,
//! `target | what | measured | bar | ratio | verdict`, which `scripts/bench.sh` gathers from every
//! harness into the one table BENCHMARKS.md shows. Included by path in each harness (it is not a
//! harness of its own); a harness that reports only some kinds of line says so with an `expect`
//! on its `mod targets`.

/// Which side of its bar a figure must be on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bar {
    /// The figure must reach the bar (throughput, speed-ups).
    AtLeast(f64),
    /// The figure must stay under the bar (latency, CPU, memory).
    AtMost(f64),
}

/// A number as BENCHMARKS.md writes it: thousands separated from 10,000 up, else 2 decimals
/// (or none for whole numbers).
pub(crate) fn number(value: f64) -> String {
    if value.abs() >= 10_000.0 {
        let digits = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Prints one target line: the figure, the bar, the figure's ratio to the bar and the verdict.
pub(crate) fn report(what: &str, measured: f64, unit: &str, bar: Bar) {
    let (bar_text, bar_value, met) = match bar {
        Bar::AtLeast(value) => (
            format!("≥ {} {unit}", number(value)),
            value,
            measured >= value,
        ),
        Bar::AtMost(value) => (
            format!("≤ {} {unit}", number(value)),
            value,
            measured <= value,
        ),
    };
    println!(
        "target | {what} | {} | {} | {:.2}× | {}",
        format!("{} {unit}", number(measured)).trim_end(),
        bar_text.trim_end(),
        measured / bar_value,
        if met { "met" } else { "MISS" }
    );
}

/// Prints one target line for a yes/no target (exact totals): no ratio.
pub(crate) fn report_check(what: &str, measured: &str, bar: &str, met: bool) {
    println!(
        "target | {what} | {measured} | {bar} | — | {}",
        if met { "met" } else { "MISS" }
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_grouped_from_ten_thousand() {
        assert_eq!(super::number(201_234.4), "201,234");
        assert_eq!(super::number(1_000_000.0), "1,000,000");
        assert_eq!(super::number(2.456), "2.46");
        assert_eq!(super::number(300.0), "300");
    }
}
