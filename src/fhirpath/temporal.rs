//! FHIRPath `Date`, `DateTime` and `Time`: partial values that keep the precision they were
//! written with. Comparing values of different precision can be undecidable (empty), seconds
//! and milliseconds count as one precision, and values with time zones are compared in UTC.

use std::cmp::Ordering;
use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike};

/// A date or date-time; a date has no time fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeValue {
    pub year: i32,
    pub month: Option<u32>,
    pub day: Option<u32>,
    pub hour: Option<u32>,
    pub minute: Option<u32>,
    pub second: Option<u32>,
    pub millisecond: Option<u32>,
    /// Offset from UTC in minutes, when written.
    pub offset: Option<i32>,
}

/// A time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeValue {
    pub hour: u32,
    pub minute: Option<u32>,
    pub second: Option<u32>,
    pub millisecond: Option<u32>,
}

/// Units a date or time can be moved by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarUnit {
    Year,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

fn digits(text: &str, count: usize) -> Option<u32> {
    (text.len() == count && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Hour, minute, second and millisecond.
type Clock = (u32, Option<u32>, Option<u32>, Option<u32>);

/// `hh[:mm[:ss[.fff]]]`.
fn parse_clock(text: &str) -> Option<Clock> {
    let mut parts = text.splitn(3, ':');
    let hour = digits(parts.next()?, 2).filter(|h| *h < 24)?;
    let minute = match parts.next() {
        Some(part) => Some(digits(part, 2).filter(|m| *m < 60)?),
        None => None,
    };
    let (second, millisecond) = match parts.next() {
        Some(part) => {
            let (whole, fraction) = match part.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (part, None),
            };
            let second = digits(whole, 2).filter(|s| *s < 60)?;
            let millisecond = match fraction {
                Some(fraction)
                    if !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    let padded: String = fraction.chars().chain("000".chars()).take(3).collect();
                    Some(padded.parse().ok()?)
                }
                Some(_) => return None,
                None => None,
            };
            (Some(second), millisecond)
        }
        None => (None, None),
    };
    Some((hour, minute, second, millisecond))
}

/// `Z`, `+hh:mm` or `-hh:mm` into minutes.
fn parse_offset(text: &str) -> Option<i32> {
    if text == "Z" {
        return Some(0);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = text[1..].split_once(':')?;
    let hours = digits(hours, 2).filter(|h| *h <= 14)?;
    let minutes = digits(minutes, 2).filter(|m| *m < 60)?;
    Some(sign * i32::try_from(hours * 60 + minutes).ok()?)
}

impl DateTimeValue {
    fn date_only(year: i32, month: Option<u32>, day: Option<u32>) -> DateTimeValue {
        DateTimeValue {
            year,
            month,
            day,
            hour: None,
            minute: None,
            second: None,
            millisecond: None,
            offset: None,
        }
    }

    /// `YYYY[-MM[-DD]]`.
    pub fn parse_date(text: &str) -> Option<DateTimeValue> {
        let mut parts = text.splitn(3, '-');
        let year = i32::try_from(digits(parts.next()?, 4)?)
            .ok()
            .filter(|y| *y >= 1)?;
        let month = match parts.next() {
            Some(part) => Some(digits(part, 2).filter(|m| (1..=12).contains(m))?),
            None => None,
        };
        let day = match (parts.next(), month) {
            (Some(part), Some(month)) => {
                Some(digits(part, 2).filter(|d| *d >= 1 && *d <= days_in_month(year, month))?)
            }
            (Some(_), None) => return None,
            (None, _) => None,
        };
        Some(DateTimeValue::date_only(year, month, day))
    }

    /// `YYYY[-MM[-DD]][T[hh[:mm[:ss[.fff]]]][Z|±hh:mm]]`; a time zone needs a time.
    pub fn parse_date_time(text: &str) -> Option<DateTimeValue> {
        let (date, time) = match text.split_once('T') {
            Some((date, time)) => (date, Some(time)),
            None => (text, None),
        };
        let mut value = DateTimeValue::parse_date(date)?;
        let Some(time) = time.filter(|t| !t.is_empty()) else {
            return Some(value);
        };
        value.day?;
        let zone_at = time.find(['Z', '+', '-']);
        let (clock, zone) = match zone_at {
            Some(at) => (&time[..at], Some(&time[at..])),
            None => (time, None),
        };
        let (hour, minute, second, millisecond) = parse_clock(clock)?;
        value.hour = Some(hour);
        value.minute = minute;
        value.second = second;
        value.millisecond = millisecond;
        value.offset = match zone {
            Some(zone) => Some(parse_offset(zone)?),
            None => None,
        };
        Some(value)
    }

    pub fn has_time(&self) -> bool {
        self.hour.is_some()
    }

    /// The date part only.
    pub fn date(&self) -> DateTimeValue {
        DateTimeValue::date_only(self.year, self.month, self.day)
    }

    /// Digits of precision: 4 (year), 6, 8, 10, 12, 14 (second) or 17 (millisecond).
    pub fn precision(&self) -> u32 {
        match (
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.millisecond,
        ) {
            (None, ..) => 4,
            (_, None, ..) => 6,
            (_, _, None, ..) => 8,
            (_, _, _, None, ..) => 10,
            (_, _, _, _, None, _) => 12,
            (_, _, _, _, _, None) => 14,
            _ => 17,
        }
    }

    fn filled(&self) -> Option<NaiveDateTime> {
        NaiveDate::from_ymd_opt(self.year, self.month.unwrap_or(1), self.day.unwrap_or(1))?
            .and_hms_milli_opt(
                self.hour.unwrap_or(0),
                self.minute.unwrap_or(0),
                self.second.unwrap_or(0),
                self.millisecond.unwrap_or(0),
            )
    }

    /// The fields of `moment` that this value has.
    fn with_fields_of(&self, moment: NaiveDateTime) -> Option<DateTimeValue> {
        let year = moment.year();
        if !(1..=9999).contains(&year) {
            return None;
        }
        Some(DateTimeValue {
            year,
            month: self.month.map(|_| moment.month()),
            day: self.day.map(|_| moment.day()),
            hour: self.hour.map(|_| moment.hour()),
            minute: self.minute.map(|_| moment.minute()),
            second: self.second.map(|_| moment.second()),
            millisecond: self
                .millisecond
                .map(|_| moment.and_utc().timestamp_subsec_millis()),
            offset: self.offset,
        })
    }

    /// The same moment in UTC (needs a time zone).
    pub fn to_utc(self) -> Option<DateTimeValue> {
        let offset = self.offset?;
        let moment = self
            .filled()?
            .checked_sub_signed(TimeDelta::minutes(i64::from(offset)))?;
        let mut utc = self.with_fields_of(moment)?;
        utc.offset = Some(0);
        Some(utc)
    }

    fn components(&self) -> [Option<i64>; 6] {
        [
            Some(i64::from(self.year)),
            self.month.map(i64::from),
            self.day.map(i64::from),
            self.hour.map(i64::from),
            self.minute.map(i64::from),
            self.second
                .map(|s| i64::from(s) * 1000 + i64::from(self.millisecond.unwrap_or(0))),
        ]
    }

    /// Order of two dates or date-times; `None` when their precisions leave it open.
    pub fn compare(&self, other: &DateTimeValue) -> Option<Ordering> {
        if self.has_time() && other.has_time() {
            match (self.offset, other.offset) {
                (Some(_), Some(_)) => {
                    return compare_components(
                        &self.to_utc()?.components(),
                        &other.to_utc()?.components(),
                    );
                }
                (None, None) => {}
                // One side's zone is unknown: only a difference of year or month is certain.
                _ => {
                    let (a, b) = (self.components(), other.components());
                    return match compare_components(&a[..2], &b[..2]) {
                        Some(Ordering::Equal) | None => None,
                        decided => decided,
                    };
                }
            }
        }
        compare_components(&self.components(), &other.components())
    }

    /// Moves the value by `amount` units, keeping its precision (smaller units than the
    /// precision are cut off after the move).
    pub fn add(&self, amount: i64, unit: CalendarUnit) -> Option<DateTimeValue> {
        match unit {
            CalendarUnit::Year => {
                let year = i32::try_from(i64::from(self.year).checked_add(amount)?).ok()?;
                self.with_year_month(year, self.month)
            }
            CalendarUnit::Month => match self.month {
                Some(month) => {
                    let total =
                        (i64::from(self.year) * 12 + i64::from(month) - 1).checked_add(amount)?;
                    let year = i32::try_from(total.div_euclid(12)).ok()?;
                    let month = u32::try_from(total.rem_euclid(12) + 1).ok()?;
                    self.with_year_month(year, Some(month))
                }
                None => self.add(amount / 12, CalendarUnit::Year),
            },
            _ => {
                let delta = match unit {
                    CalendarUnit::Week => TimeDelta::try_weeks(amount)?,
                    CalendarUnit::Day => TimeDelta::try_days(amount)?,
                    CalendarUnit::Hour => TimeDelta::try_hours(amount)?,
                    CalendarUnit::Minute => TimeDelta::try_minutes(amount)?,
                    CalendarUnit::Second => TimeDelta::try_seconds(amount)?,
                    _ => TimeDelta::try_milliseconds(amount)?,
                };
                self.with_fields_of(self.filled()?.checked_add_signed(delta)?)
            }
        }
    }

    fn with_year_month(&self, year: i32, month: Option<u32>) -> Option<DateTimeValue> {
        if !(1..=9999).contains(&year) {
            return None;
        }
        let day = match (self.day, month) {
            (Some(day), Some(month)) => Some(day.min(days_in_month(year, month))),
            (day, _) => day,
        };
        Some(DateTimeValue {
            year,
            month,
            day,
            ..*self
        })
    }

    /// The lowest (`high == false`) or highest value this one may stand for, to `precision`
    /// digits (4, 6, 8 for a date; also 10, 12, 14, 17 for a date-time).
    pub fn boundary(&self, precision: u32, high: bool, is_date: bool) -> Option<DateTimeValue> {
        let allowed: &[u32] = if is_date {
            &[4, 6, 8]
        } else {
            &[4, 6, 8, 10, 12, 14, 17]
        };
        if !allowed.contains(&precision) {
            return None;
        }
        let month = (precision >= 6).then(|| self.month.unwrap_or(if high { 12 } else { 1 }));
        let day = match month {
            Some(month) if precision >= 8 => Some(self.day.unwrap_or(if high {
                days_in_month(self.year, month)
            } else {
                1
            })),
            _ => None,
        };
        let fill = |value: Option<u32>, max: u32| value.unwrap_or(if high { max } else { 0 });
        let hour = (precision >= 10).then(|| fill(self.hour, 23));
        let minute = (precision >= 12).then(|| fill(self.minute, 59));
        let second = (precision >= 14).then(|| fill(self.second, 59));
        let millisecond = (precision >= 17).then(|| fill(self.millisecond, 999));
        let offset = hour.map(|_| self.offset.unwrap_or(if high { -12 * 60 } else { 14 * 60 }));
        Some(DateTimeValue {
            year: self.year,
            month,
            day,
            hour,
            minute,
            second,
            millisecond,
            offset,
        })
    }

    /// The current moment in the local time zone, to the millisecond.
    pub fn now() -> DateTimeValue {
        let now = chrono::Local::now();
        DateTimeValue {
            year: now.year(),
            month: Some(now.month()),
            day: Some(now.day()),
            hour: Some(now.hour()),
            minute: Some(now.minute()),
            second: Some(now.second()),
            millisecond: Some(now.timestamp_subsec_millis().min(999)),
            offset: Some(now.offset().local_minus_utc() / 60),
        }
    }
}

fn compare_components(left: &[Option<i64>], right: &[Option<i64>]) -> Option<Ordering> {
    for (a, b) in left.iter().zip(right) {
        match (a, b) {
            (Some(a), Some(b)) if a != b => return Some(a.cmp(b)),
            (Some(_), Some(_)) => {}
            (None, None) => return Some(Ordering::Equal),
            _ => return None,
        }
    }
    Some(Ordering::Equal)
}

impl TimeValue {
    /// `hh[:mm[:ss[.fff]]]` (a time of day has no time zone).
    pub fn parse(text: &str) -> Option<TimeValue> {
        let (hour, minute, second, millisecond) = parse_clock(text)?;
        Some(TimeValue {
            hour,
            minute,
            second,
            millisecond,
        })
    }

    /// Digits of precision: 2, 4, 6 or 9.
    pub fn precision(&self) -> u32 {
        match (self.minute, self.second, self.millisecond) {
            (None, ..) => 2,
            (_, None, _) => 4,
            (_, _, None) => 6,
            _ => 9,
        }
    }

    fn components(&self) -> [Option<i64>; 3] {
        [
            Some(i64::from(self.hour)),
            self.minute.map(i64::from),
            self.second
                .map(|s| i64::from(s) * 1000 + i64::from(self.millisecond.unwrap_or(0))),
        ]
    }

    pub fn compare(&self, other: &TimeValue) -> Option<Ordering> {
        compare_components(&self.components(), &other.components())
    }

    /// Moves the time by `amount` units (wrapping at midnight); `None` for date units.
    pub fn add(&self, amount: i64, unit: CalendarUnit) -> Option<TimeValue> {
        let delta = match unit {
            CalendarUnit::Hour => TimeDelta::try_hours(amount)?,
            CalendarUnit::Minute => TimeDelta::try_minutes(amount)?,
            CalendarUnit::Second => TimeDelta::try_seconds(amount)?,
            CalendarUnit::Millisecond => TimeDelta::try_milliseconds(amount)?,
            _ => return None,
        };
        let filled = NaiveTime::from_hms_milli_opt(
            self.hour,
            self.minute.unwrap_or(0),
            self.second.unwrap_or(0),
            self.millisecond.unwrap_or(0),
        )?;
        let (moved, _) = filled.overflowing_add_signed(delta);
        Some(TimeValue {
            hour: moved.hour(),
            minute: self.minute.map(|_| moved.minute()),
            second: self.second.map(|_| moved.second()),
            millisecond: self.millisecond.map(|_| moved.nanosecond() / 1_000_000),
        })
    }

    /// The lowest or highest time this one may stand for, to 2, 4, 6 or 9 digits.
    pub fn boundary(&self, precision: u32, high: bool) -> Option<TimeValue> {
        if ![2, 4, 6, 9].contains(&precision) {
            return None;
        }
        let fill = |value: Option<u32>, max: u32| value.unwrap_or(if high { max } else { 0 });
        Some(TimeValue {
            hour: self.hour,
            minute: (precision >= 4).then(|| fill(self.minute, 59)),
            second: (precision >= 6).then(|| fill(self.second, 59)),
            millisecond: (precision >= 9).then(|| fill(self.millisecond, 999)),
        })
    }

    pub fn now() -> TimeValue {
        let now = chrono::Local::now();
        TimeValue {
            hour: now.hour(),
            minute: Some(now.minute()),
            second: Some(now.second()),
            millisecond: Some(now.timestamp_subsec_millis().min(999)),
        }
    }
}

fn write_clock(
    f: &mut fmt::Formatter<'_>,
    hour: u32,
    minute: Option<u32>,
    second: Option<u32>,
    millisecond: Option<u32>,
) -> fmt::Result {
    write!(f, "{hour:02}")?;
    if let Some(minute) = minute {
        write!(f, ":{minute:02}")?;
        if let Some(second) = second {
            write!(f, ":{second:02}")?;
            if let Some(millisecond) = millisecond {
                write!(f, ".{millisecond:03}")?;
            }
        }
    }
    Ok(())
}

/// The value as `toString()` gives it (no `@`, no trailing `T` for a date-precision date-time).
impl fmt::Display for DateTimeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if let Some(month) = self.month {
            write!(f, "-{month:02}")?;
            if let Some(day) = self.day {
                write!(f, "-{day:02}")?;
            }
        }
        if let Some(hour) = self.hour {
            f.write_str("T")?;
            write_clock(f, hour, self.minute, self.second, self.millisecond)?;
            match self.offset {
                Some(0) => f.write_str("Z")?,
                Some(offset) => {
                    let sign = if offset < 0 { '-' } else { '+' };
                    write!(f, "{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for TimeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_clock(f, self.hour, self.minute, self.second, self.millisecond)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(text: &str) -> DateTimeValue {
        DateTimeValue::parse_date_time(text).unwrap_or(DateTimeValue::date_only(1, None, None))
    }

    #[test]
    fn partial_values_parse_and_print() {
        assert_eq!(
            dt("2015-02-04T14:34:28.123+10:00").to_string(),
            "2015-02-04T14:34:28.123+10:00"
        );
        assert_eq!(dt("2015T").to_string(), "2015");
        assert!(DateTimeValue::parse_date_time("2015-02-30").is_none());
        assert!(DateTimeValue::parse_date_time("2015-02-04T25").is_none());
        assert!(TimeValue::parse("14:34:28Z").is_none());
        assert_eq!(dt("2015-02-04T14").precision(), 10);
    }

    #[test]
    fn comparisons_respect_precision_and_zones() {
        assert_eq!(
            dt("2017-11-05T01:30:00.0-04:00").compare(&dt("2017-11-05T00:30:00.0-05:00")),
            Some(Ordering::Equal)
        );
        assert_eq!(dt("2012-04-15").compare(&dt("2012-04-15T10:00:00")), None);
        assert_eq!(
            dt("2012-04-15T15:30:31").compare(&dt("2012-04-15T15:30:31.0")),
            Some(Ordering::Equal)
        );
        assert_eq!(dt("2018-03").compare(&dt("2018-03-01")), None);
        assert_eq!(
            dt("2018-03").compare(&dt("2019-03-01")),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn arithmetic_clamps_and_keeps_precision() {
        assert_eq!(
            dt("2020-01-31")
                .add(1, CalendarUnit::Month)
                .map(|v| v.to_string()),
            Some("2020-02-29".into())
        );
        assert_eq!(
            dt("1973-12-25")
                .add(7, CalendarUnit::Day)
                .map(|v| v.to_string()),
            Some("1974-01-01".into())
        );
        assert_eq!(
            dt("1973-12-25T00:00:00.000+10:00")
                .add(10, CalendarUnit::Millisecond)
                .map(|v| v.to_string()),
            Some("1973-12-25T00:00:00.010+10:00".into())
        );
        assert!(dt("9999-12-31").add(1, CalendarUnit::Day).is_none());
    }
}
