//! Times: `meta.lastUpdated` instants, HTTP dates, and FHIR date/dateTime/instant values read
//! as the range of time their precision implies.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Microseconds since the Unix epoch, UTC: how the store keeps `lastUpdated`.
pub type Micros = i64;

pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

fn to_datetime(micros: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// The FHIR `instant` for a store time, such as `2026-11-25T15:09:46.123456Z`.
pub fn format_instant(micros: Micros) -> String {
    to_datetime(micros).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The HTTP date (RFC 7231 IMF-fixdate) for a store time, for `Last-Modified`.
pub fn format_http_date(micros: Micros) -> String {
    to_datetime(micros)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// Parses an HTTP date (`If-Modified-Since`); the result has second precision.
pub fn parse_http_date(value: &str) -> Option<Micros> {
    DateTime::parse_from_rfc2822(value.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .or_else(|| {
            NaiveDateTime::parse_from_str(value.trim(), "%a, %d %b %Y %H:%M:%S GMT")
                .ok()
                .map(|t| t.and_utc().timestamp_micros())
        })
}

/// The half-open range `[start, end)` of time a FHIR date, dateTime or instant denotes, in
/// microseconds: `2026` is the whole year, `2026-11-25T10:00:00Z` one second. A value without a
/// time zone is read as UTC. `None` when `value` is not a valid FHIR date/time.
pub fn parse_fhir_range(value: &str) -> Option<(Micros, Micros)> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = value.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let year = digits(0..4)? as i32;
    match bytes.len() {
        4 => {
            let start = NaiveDate::from_ymd_opt(year, 1, 1)?;
            let end = NaiveDate::from_ymd_opt(year + 1, 1, 1)?;
            Some((date_micros(start), date_micros(end)))
        }
        7 if bytes[4] == b'-' => {
            let month = digits(5..7)?;
            let start = NaiveDate::from_ymd_opt(year, month, 1)?;
            let end = if month == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(year, month + 1, 1)?
            };
            Some((date_micros(start), date_micros(end)))
        }
        10 if bytes[4] == b'-' && bytes[7] == b'-' => {
            let start = NaiveDate::from_ymd_opt(year, digits(5..7)?, digits(8..10)?)?;
            let end = start.succ_opt()?;
            Some((date_micros(start), date_micros(end)))
        }
        _ => parse_date_time(value),
    }
}

fn date_micros(date: NaiveDate) -> Micros {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
        .timestamp_micros()
}

/// A dateTime with a time part: seconds precision (or the given fraction's precision); minutes
/// are accepted too, as search values often omit seconds.
fn parse_date_time(value: &str) -> Option<(Micros, Micros)> {
    let (date_part, time_part) = value.split_once('T')?;
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d").ok()?;
    if date.year() < 1 {
        return None;
    }
    // Split off the zone: Z, +hh:mm or -hh:mm; none means UTC.
    let (clock, offset_seconds) = if let Some(clock) = time_part.strip_suffix('Z') {
        (clock, 0)
    } else if let Some(at) = time_part.rfind(['+', '-']) {
        let (clock, zone) = time_part.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = zone.get(1..)?.split_once(':')?;
        if hours.len() != 2 || minutes.len() != 2 {
            return None;
        }
        let hours: i64 = hours.parse().ok()?;
        let minutes: i64 = minutes.parse().ok()?;
        if hours > 14 || minutes > 59 {
            return None;
        }
        (clock, sign * (hours * 3600 + minutes * 60))
    } else {
        (time_part, 0)
    };
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (clock, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let number = |part: &str, max: u32| -> Option<u32> {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok().filter(|n| *n <= max)
    };
    let (hour, minute, second, width) = match parts.as_slice() {
        [h, m] if fraction.is_none() => (number(h, 23)?, number(m, 59)?, 0, 60_000_000),
        [h, m, s] => (
            number(h, 23)?,
            number(m, 59)?,
            number(s, 60)?.min(59),
            1_000_000,
        ),
        _ => return None,
    };
    let naive = date.and_hms_opt(hour, minute, second)?;
    let mut start = naive.and_utc().timestamp_micros() - offset_seconds * 1_000_000;
    let mut width: i64 = width;
    if let Some(fraction) = fraction {
        if fraction.is_empty()
            || fraction.len() > 9
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let digits = fraction.len().min(6) as u32;
        let value: i64 = fraction.get(..digits as usize)?.parse().ok()?;
        start += value * 10_i64.pow(6 - digits);
        width = 10_i64.pow(6 - digits);
    }
    Some((start, start + width))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Micros {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_micros())
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn precision_sets_the_range() {
        assert_eq!(
            parse_fhir_range("2026"),
            Some((at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z")))
        );
        assert_eq!(
            parse_fhir_range("2026-12"),
            Some((at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")))
        );
        assert_eq!(
            parse_fhir_range("2024-02-28"),
            Some((at("2024-02-28T00:00:00Z"), at("2024-02-29T00:00:00Z")))
        );
        assert_eq!(
            parse_fhir_range("2026-11-25T10:00:00+02:00"),
            Some((at("2026-11-25T08:00:00Z"), at("2026-11-25T08:00:01Z")))
        );
        assert_eq!(
            parse_fhir_range("2026-11-25T10:00:00.12Z"),
            Some((at("2026-11-25T10:00:00.12Z"), at("2026-11-25T10:00:00.13Z")))
        );
        assert_eq!(
            parse_fhir_range("2026-11-25T10:00Z"),
            Some((at("2026-11-25T10:00:00Z"), at("2026-11-25T10:01:00Z")))
        );
    }

    #[test]
    fn malformed_values_are_rejected() {
        for bad in [
            "",
            "26",
            "2026-13",
            "2026-02-30",
            "2026-11-25T25:00:00Z",
            "2026-11-25T10:00:00+2",
            "yesterday",
            "2026-11-25T10:00:00.Z",
        ] {
            assert_eq!(parse_fhir_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn instants_and_http_dates_round_trip() {
        let t = at("2026-11-25T15:09:46.123456Z");
        assert_eq!(format_instant(t), "2026-11-25T15:09:46.123456Z");
        assert_eq!(format_http_date(t), "Wed, 25 Nov 2026 15:09:46 GMT");
        assert_eq!(
            parse_http_date("Wed, 25 Nov 2026 15:09:46 GMT"),
            Some(t - 123_456)
        );
    }
}
