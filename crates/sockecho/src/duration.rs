//! Durations as users type them on the command line: `500ms`, `30s`, `5m`,
//! `1h`, `250us`, or a bare number of seconds (`0.2`, as `ping -i` takes).
//!
//! We parse by hand rather than with a crate because the common crates
//! reject both fractions (`1.5s`) and bare numbers, which ping and nc users
//! type every day.

use std::time::Duration;

/// The longest duration accepted: a day is far past any sensible timeout,
/// and the bound keeps arithmetic on deadlines from overflowing.
pub const MAX: Duration = Duration::from_secs(24 * 3600);

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration '{text}': {why} (e.g. 500ms, 30s, 5m, 1h, or 0.2 for seconds)")]
pub struct ParseDurationError {
    text: String,
    why: &'static str,
}

/// Parses `NUMBER[UNIT]` where UNIT is one of `ns`, `us`, `ms`, `s`, `m`,
/// `h` (no unit means seconds) and NUMBER may have a fractional part.
///
/// ```
/// use std::time::Duration;
/// use sockecho::duration::parse;
/// assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse("0.2").unwrap(), Duration::from_millis(200));
/// assert!(parse("5 parsecs").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, ParseDurationError> {
    let fail = |why| ParseDurationError {
        text: text.to_owned(),
        why,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(fail("no number"));
    }
    let unit_nanos: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" | "sec" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(fail("unknown unit")),
    };
    // Integer arithmetic, so that `1.234s` is exactly 1234 ms.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(fail("not a number"));
    }
    if whole.len() > 12 || fraction.len() > 12 || fraction.contains('.') {
        return Err(fail("not a number"));
    }
    let digits = |s: &str| -> u128 { s.bytes().fold(0, |n, b| n * 10 + u128::from(b - b'0')) };
    let nanos = digits(whole) * unit_nanos
        + digits(fraction) * unit_nanos / 10u128.pow(fraction.len() as u32);
    if nanos > MAX.as_nanos() {
        return Err(fail("longer than a day"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats a duration the way [`parse`] reads it back, in the largest unit
/// that keeps it exact enough to read (`5m`, `1.5s`, `200ms`, `40us`).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".to_owned()
    } else if nanos.is_multiple_of(3_600_000_000_000) {
        format!("{}h", nanos / 3_600_000_000_000)
    } else if nanos.is_multiple_of(60_000_000_000) {
        format!("{}m", nanos / 60_000_000_000)
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos >= 1_000_000_000 {
        // Integer arithmetic: a float would print 1.14 s as 1.1400000000000001.
        let text = format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
        format!("{}s", text.trim_end_matches('0'))
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("3").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "-1s", "1x", "1.2.3s", "25h", "1e999", "ms5"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let msg = parse("10 parsecs").unwrap_err().to_string();
        assert!(
            msg.contains("'10 parsecs'") && msg.contains("500ms"),
            "{msg}"
        );
    }

    #[test]
    fn format_reads_back() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(200),
            Duration::from_micros(40),
            Duration::from_secs(3),
            Duration::from_millis(1500),
            Duration::from_millis(1140),
            Duration::from_nanos(1_000_000_001),
            Duration::from_secs(300),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse(&format(d)).unwrap(), d, "{}", format(d));
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,12}") {
            let _ = parse(&text);
        }

        #[test]
        fn whole_milliseconds_round_trip(ms in 0u64..86_400_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
