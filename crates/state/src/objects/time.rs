//! `Time`: an RFC 3339 timestamp (`2024-05-01T12:00:00Z`), kept as written and as Unix
//! milliseconds so comparisons and durations need no parsing.

use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::TimeError;

const MS_PER_DAY: i64 = 86_400_000;
/// Unix milliseconds of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the range RFC 3339 can
/// write.
const MIN_UNIX_MS: i64 = -62_167_219_200_000;
const MAX_UNIX_MS: i64 = 253_402_300_799_999;

/// An RFC 3339 timestamp. Ordered by instant; two spellings of one instant are ordered by text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Time {
    text: String,
    unix_ms: i64,
}

impl Time {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    pub fn parse(text: &str) -> Result<Time, TimeError> {
        let unix_ms = parse_rfc3339(text).ok_or_else(|| TimeError(text.to_owned()))?;
        Ok(Time {
            text: text.to_owned(),
            unix_ms,
        })
    }

    /// The instant `unix_ms` after the epoch, written in UTC with second precision when whole and
    /// millisecond precision otherwise. Clamped to years 0000–9999, the range RFC 3339 can write.
    pub fn from_unix_millis(unix_ms: i64) -> Time {
        let unix_ms = unix_ms.clamp(MIN_UNIX_MS, MAX_UNIX_MS);
        let days = unix_ms.div_euclid(MS_PER_DAY);
        let ms_of_day = unix_ms.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let seconds = ms_of_day / 1000;
        let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
        if ms_of_day % 1000 != 0 {
            text.push_str(&format!(".{:03}", ms_of_day % 1000));
        }
        text.push('Z');
        Time { text, unix_ms }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Milliseconds since 1970-01-01T00:00:00Z (sub-millisecond digits are dropped).
    pub fn unix_millis(&self) -> i64 {
        self.unix_ms
    }
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    let date_ok = bytes[4] == b'-' && bytes[7] == b'-';
    let time_ok = bytes[13] == b':' && bytes[16] == b':';
    if !date_ok || !time_ok {
        return None;
    }
    let year = digits(&bytes[0..4])?;
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    let (hour, minute, second) = (
        digits(&bytes[11..13])?,
        digits(&bytes[14..16])?,
        digits(&bytes[17..19])?,
    );
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let (fraction_ms, zone) = parse_fraction(&bytes[19..])?;
    let offset_ms = parse_offset(zone)?;
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1000 + fraction_ms - offset_ms)
}

/// Reads `.ddd…` if present: returns milliseconds and the bytes after it.
fn parse_fraction(bytes: &[u8]) -> Option<(i64, &[u8])> {
    if bytes.first() != Some(&b'.') {
        return Some((0, bytes));
    }
    let count = bytes[1..].iter().take_while(|b| b.is_ascii_digit()).count();
    if count == 0 || count > 9 {
        return None;
    }
    let mut ms = 0;
    for i in 0..3 {
        let digit = bytes
            .get(1 + i)
            .filter(|_| i < count)
            .map_or(0, |b| i64::from(b - b'0'));
        ms = ms * 10 + digit;
    }
    Some((ms, &bytes[1 + count..]))
}

/// `Z` or `±HH:MM`, as milliseconds east of UTC.
fn parse_offset(bytes: &[u8]) -> Option<i64> {
    if matches!(bytes, [b'Z'] | [b'z']) {
        return Some(0);
    }
    let [sign, h1, h2, b':', m1, m2] = bytes else {
        return None;
    };
    let hours = digits(&[*h1, *h2])?;
    let minutes = digits(&[*m1, *m2])?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let magnitude = (hours * 60 + minutes) * 60_000;
    match sign {
        b'+' => Some(magnitude),
        b'-' => Some(-magnitude),
        _ => None,
    }
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date, counting in 400-year eras that start on
/// March 1st so the leap day falls at the end of each year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl PartialOrd for Time {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Time {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.unix_ms, &self.text).cmp(&(other.unix_ms, &other.text))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TimeVisitor)
    }
}

struct TimeVisitor;

impl Visitor<'_> for TimeVisitor {
    type Value = Time;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 time such as \"2024-05-01T12:00:00Z\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Time, E> {
        Time::parse(text).map_err(E::custom)
    }
}
