//! `Quantity`: resource amounts (`500m` CPU, `1.5Gi` memory) parsed exactly as Kubernetes parses
//! them, kept as written for output and as an exact decimal for arithmetic.
//!
//! Grammar (Kubernetes `resource.Quantity`):
//! `<sign>? <digits> [. <digits>] <suffix>` where the number may also be `<digits>.` or
//! `.<digits>`, and the suffix is a decimal SI prefix (`m`, none, `k`, `M`, `G`, `T`, `P`, `E`),
//! a binary SI prefix (`Ki` … `Ei`), or a decimal exponent (`e3`, `E-2`).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::QuantityError;

/// Significant digits an `i128` mantissa always holds (10^38 < 2^127).
const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// Largest decimal exponent accepted after `e`; far beyond any real amount, small enough that
/// exponent arithmetic can never overflow.
const MAX_EXPONENT_ABS: i32 = 10_000;
/// Longest quantity text accepted, so a hostile manifest cannot make parsing scan megabytes.
const MAX_QUANTITY_TEXT_BYTES: usize = 128;

/// A Kubernetes quantity. Equality and ordering are by amount (`1Gi == 1024Mi`); output keeps the
/// text as written.
#[derive(Clone)]
pub struct Quantity {
    text: String,
    /// The amount is `mantissa * 10^exp10`, with trailing zeros moved into `exp10`.
    mantissa: i128,
    exp10: i32,
}

impl Quantity {
    /// Parses `text` with the Kubernetes grammar.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let (mantissa, exp10) = parse_amount(text)?;
        Ok(Quantity {
            text: text.to_owned(),
            mantissa,
            exp10,
        })
    }

    /// A quantity of `milli` thousandths, written as `500m`, or `2` when whole.
    pub fn from_milli(milli: i64) -> Quantity {
        if milli % 1000 == 0 {
            Quantity::from_exact(format!("{}", milli / 1000), i128::from(milli), -3)
        } else {
            Quantity::from_exact(format!("{milli}m"), i128::from(milli), -3)
        }
    }

    /// A whole quantity written as a plain integer, e.g. a pod count.
    pub fn from_value(value: i64) -> Quantity {
        Quantity::from_exact(value.to_string(), i128::from(value), 0)
    }

    /// A byte count written with the largest exact binary suffix: `17179869184` becomes `16Gi`.
    pub fn from_bytes(bytes: i64) -> Quantity {
        const SUFFIXES: [(&str, u32); 6] = [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ];
        for (suffix, shift) in SUFFIXES {
            let unit = 1i64 << shift;
            if bytes != 0 && bytes % unit == 0 {
                let text = format!("{}{suffix}", bytes / unit);
                return Quantity::from_exact(text, i128::from(bytes), 0);
            }
        }
        Quantity::from_value(bytes)
    }

    fn from_exact(text: String, mantissa: i128, exp10: i32) -> Quantity {
        let (mantissa, exp10) = normalize(mantissa, exp10);
        Quantity {
            text,
            mantissa,
            exp10,
        }
    }

    /// The text as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The amount in thousandths, rounded away from zero: cpu `500m` is 500, `1.5` is 1500.
    /// Saturates at the `i64` range.
    pub fn milli_value(&self) -> i64 {
        self.scaled_value(-3)
    }

    /// The amount in units (bytes for memory), rounded away from zero as Kubernetes does:
    /// `0.1Ki` is 103. Saturates at the `i64` range.
    pub fn value(&self) -> i64 {
        self.scaled_value(0)
    }

    /// The amount in units of `10^scale10`, rounded away from zero, saturating at the `i64` range.
    pub fn scaled_value(&self, scale10: i32) -> i64 {
        let shift = i64::from(self.exp10) - i64::from(scale10);
        let magnitude = u32::try_from(shift.unsigned_abs()).ok();
        let power = magnitude.and_then(|m| 10i128.checked_pow(m));
        let scaled = if shift >= 0 {
            match power.and_then(|p| self.mantissa.checked_mul(p)) {
                Some(value) => value,
                None => return saturate(self.mantissa.signum()),
            }
        } else {
            match power {
                Some(p) => divide_away_from_zero(self.mantissa, p),
                // The divisor exceeds any mantissa: a nonzero amount rounds to one unit.
                None => self.mantissa.signum(),
            }
        };
        i64::try_from(scaled).unwrap_or_else(|_| saturate(scaled.signum()))
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }
}

fn saturate(sign: i128) -> i64 {
    if sign < 0 {
        i64::MIN
    } else {
        i64::MAX
    }
}

fn divide_away_from_zero(value: i128, divisor: i128) -> i128 {
    let quotient = value / divisor;
    if value % divisor == 0 {
        quotient
    } else {
        quotient + value.signum()
    }
}

/// Moves trailing decimal zeros of the mantissa into the exponent so equal amounts compare equal.
fn normalize(mut mantissa: i128, mut exp10: i32) -> (i128, i32) {
    if mantissa == 0 {
        return (0, 0);
    }
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exp10 += 1;
    }
    (mantissa, exp10)
}

/// Parses quantity text into `(mantissa, exp10)`.
fn parse_amount(text: &str) -> Result<(i128, i32), QuantityError> {
    let invalid = || QuantityError::Invalid(text.to_owned());
    if text.is_empty() || text.len() > MAX_QUANTITY_TEXT_BYTES {
        return Err(invalid());
    }
    let (negative, rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.len() + fraction.len() == 0 || fraction.contains('.') {
        return Err(invalid());
    }
    let (suffix_exp10, suffix_pow2) = parse_suffix(suffix).ok_or_else(invalid)?;
    let fraction_len = i32::try_from(fraction.len()).map_err(|_| invalid())?;
    let digits = whole.bytes().chain(fraction.bytes());
    let (mut mantissa, exp10) = digits_to_mantissa(digits, suffix_exp10 - fraction_len)
        .ok_or_else(|| QuantityError::TooLarge(text.to_owned()))?;
    mantissa = mantissa
        .checked_mul(1i128 << suffix_pow2)
        .ok_or_else(|| QuantityError::TooLarge(text.to_owned()))?;
    if negative {
        mantissa = -mantissa;
    }
    Ok(normalize(mantissa, exp10))
}

/// Folds ASCII digits into a mantissa, dropping leading zeros and moving trailing zeros into the
/// exponent; `None` when more significant digits remain than an `i128` holds.
fn digits_to_mantissa(digits: impl Iterator<Item = u8>, exp10: i32) -> Option<(i128, i32)> {
    let mut mantissa: i128 = 0;
    let mut significant = 0usize;
    let mut pending_zeros = 0i32;
    for digit in digits {
        if digit == b'0' && significant > 0 {
            pending_zeros += 1;
            continue;
        }
        if digit == b'0' {
            continue;
        }
        significant += pending_zeros as usize + 1;
        if significant > MAX_SIGNIFICANT_DIGITS {
            return None;
        }
        mantissa = mantissa * 10i128.pow(pending_zeros as u32 + 1) + i128::from(digit - b'0');
        pending_zeros = 0;
    }
    Some((mantissa, exp10 + pending_zeros))
}

/// The suffix's `(decimal exponent, binary exponent)`, or `None` if it is not a suffix.
fn parse_suffix(suffix: &str) -> Option<(i32, u32)> {
    let pair = match suffix {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => return parse_exponent(suffix).map(|exp10| (exp10, 0)),
    };
    Some(pair)
}

/// `e3`, `E-2`, `e+6`: a decimal exponent suffix.
fn parse_exponent(suffix: &str) -> Option<i32> {
    let rest = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let exponent: i32 = rest.parse().ok()?;
    (exponent.abs() <= MAX_EXPONENT_ABS).then_some(exponent)
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.mantissa == other.mantissa && self.exp10 == other.exp10
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.mantissa.hash(state);
        self.exp10.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.exp10.cmp(&other.exp10) {
            Ordering::Equal => self.mantissa.cmp(&other.mantissa),
            Ordering::Greater => {
                compare_scaled(self.mantissa, self.exp10 - other.exp10, other.mantissa)
            }
            Ordering::Less => {
                compare_scaled(other.mantissa, other.exp10 - self.exp10, self.mantissa).reverse()
            }
        }
    }
}

/// Compares `big * 10^shift` with `small`. When the product of a nonzero `big` overflows, its
/// magnitude exceeds any `i128`, so its sign decides.
fn compare_scaled(big: i128, shift: i32, small: i128) -> Ordering {
    if big == 0 {
        return 0.cmp(&small);
    }
    let product = u32::try_from(shift)
        .ok()
        .and_then(|s| 10i128.checked_pow(s))
        .and_then(|p| big.checked_mul(p));
    match product {
        Some(value) => value.cmp(&small),
        None => big.signum().cmp(&0),
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({:?})", self.text)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Quantity::parse(text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// Accepts strings and, as Kubernetes does for `cpu: 1` or `cpu: 0.5`, bare numbers.
struct QuantityVisitor;

impl Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quantity such as \"500m\" or \"1Gi\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Quantity, E> {
        Quantity::parse(text).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Quantity, E> {
        Ok(Quantity::from_value(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Quantity, E> {
        self.visit_str(&value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Quantity, E> {
        if !value.is_finite() {
            return Err(E::custom(QuantityError::Invalid(value.to_string())));
        }
        // Rust prints finite floats without an exponent, which is valid quantity text.
        self.visit_str(&value.to_string())
    }
}
