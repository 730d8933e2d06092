//! Wall-clock times as reports carry them: RFC 3339 in UTC
//! (`2025-06-01T12:00:00.000Z`), read back with any offset, and
//! `@UNIX_SECONDS` as `bench --start-at` also takes them.
//!
//! Written out by hand (the civil-from-days arithmetic of Howard
//! Hinnant's `chrono`-compatible algorithms) rather than pulling in a date
//! crate for two functions: reports from many machines are compared by
//! these times (`report merge` checks that their windows overlap).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a text is not a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time '{text}': {why} (examples: 2025-06-01T12:00:00Z, 2025-06-01T14:00:00+02:00, @1748779200)"
)]
pub struct TimeError {
    text: String,
    why: &'static str,
}

/// `at` as RFC 3339 in UTC, to the millisecond:
/// `2025-06-01T12:00:00.250Z`.
pub fn format_rfc3339(at: SystemTime) -> String {
    let (secs, nanos) = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            let whole = d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0);
            let nanos = (1_000_000_000 - d.subsec_nanos()) % 1_000_000_000;
            (-whole, nanos)
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        nanos / 1_000_000
    )
}

/// Reads an RFC 3339 time (`2025-06-01T12:00:00Z`,
/// `2025-06-01T14:00:00.5+02:00`; `T` may be `t` or a space) or
/// `@UNIX_SECONDS` (`@1748779200`, `@1748779200.25`).
pub fn parse(text: &str) -> Result<SystemTime, TimeError> {
    let err = |why| TimeError {
        text: text.to_owned(),
        why,
    };
    if let Some(secs) = text.strip_prefix('@') {
        return parse_unix(secs).ok_or_else(|| err("not a number of seconds after @"));
    }
    parse_rfc3339(text).map_err(err)
}

fn parse_unix(secs: &str) -> Option<SystemTime> {
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    if whole.is_empty() || whole.len() > 12 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    UNIX_EPOCH.checked_add(Duration::new(whole.parse().ok()?, nanos))
}

fn parse_rfc3339(text: &str) -> Result<SystemTime, &'static str> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let shape = "not YYYY-MM-DDTHH:MM:SS followed by Z or an offset";
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let separators = at(4, b'-') && at(7, b'-') && at(13, b':') && at(16, b':');
    if !(separators && matches!(b.get(10), Some(b'T' | b't' | b' '))) {
        return Err(shape);
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0, 4),
        digits(5, 2),
        digits(8, 2),
        digits(11, 2),
        digits(14, 2),
        digits(17, 2),
    ) else {
        return Err(shape);
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month as u32) {
        return Err("no such date");
    }
    // 60: a leap second, which RFC 3339 allows; it reads as the next one.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day");
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if at(i, b'.') {
        let start = i + 1;
        let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        if end == start {
            return Err("a fraction of a second needs digits after the dot");
        }
        let frac = &text[start..end.min(start + 9)];
        nanos = format!("{frac:0<9}").parse().map_err(|_| shape)?;
        i = end;
    }
    let offset = match b.get(i..) {
        Some(b"Z" | b"z") => 0,
        Some([sign @ (b'+' | b'-'), ..]) if b.len() == i + 6 && at(i + 3, b':') => {
            let (Some(h), Some(m)) = (digits(i + 1, 2), digits(i + 4, 2)) else {
                return Err(shape);
            };
            if h > 23 || m > 59 {
                return Err("no such offset");
            }
            let minutes = h * 60 + m;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return Err("no time zone: end with Z (UTC) or an offset such as +02:00"),
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    let since = Duration::new(secs.unsigned_abs(), 0);
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(since)
    } else {
        UNIX_EPOCH.checked_sub(since)
    };
    whole
        .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or("out of range")
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_utc_to_the_millisecond() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(unix(1_748_779_200, 250)),
            "2025-06-01T12:00:00.250Z"
        );
        // A leap day, and the end of a century that is not a leap year.
        assert_eq!(
            format_rfc3339(unix(951_782_400, 0)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339(unix(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn reads_back_what_it_writes_and_any_offset() {
        for t in [
            unix(0, 0),
            unix(1_748_779_200, 250),
            unix(4_107_542_399, 999),
        ] {
            assert_eq!(parse(&format_rfc3339(t)), Ok(t));
        }
        let noon = unix(1_748_779_200, 0);
        for text in [
            "2025-06-01T12:00:00Z",
            "2025-06-01t12:00:00z",
            "2025-06-01 12:00:00Z",
            "2025-06-01T14:00:00+02:00",
            "2025-06-01T06:30:00-05:30",
            "2025-06-01T12:00:00.000000000Z",
            "@1748779200",
        ] {
            assert_eq!(parse(text), Ok(noon), "{text}");
        }
        assert_eq!(
            parse("2025-06-01T12:00:00.5Z"),
            Ok(unix(1_748_779_200, 500))
        );
        assert_eq!(parse("@1748779200.25"), Ok(unix(1_748_779_200, 250)));
        assert_eq!(parse("2016-12-31T23:59:60Z"), Ok(unix(1_483_228_800, 0)));
    }

    #[test]
    fn refuses_what_is_not_a_time_in_one_line() {
        for text in [
            "",
            "now",
            "2025-06-01",
            "2025-06-01T12:00:00",
            "2025-13-01T12:00:00Z",
            "2025-02-29T12:00:00Z",
            "2025-06-01T24:00:00Z",
            "2025-06-01T12:00:00.Z",
            "2025-06-01T12:00:00+2:00",
            "2025-06-01T12:00:00+24:00",
            "2025-06-01T12:00:00Zjunk",
            "@",
            "@-5",
            "@1.2.3",
            "@1e9",
            "２０２５-06-01T12:00:00Z",
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with("invalid time '"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
