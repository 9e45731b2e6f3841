//! FHIRPath `Quantity`: a decimal with a UCUM unit or a calendar duration keyword. Units are
//! converted through a compact UCUM subset (SI prefixes, base and common derived units, time,
//! customary length and mass, mmHg, percent); other units compare only with themselves.
//! Calendar years and months are not definite durations, so they compare only with each other.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use super::decimal::Decimal;
use super::temporal::CalendarUnit;

#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: String,
}

/// The calendar duration keywords of FHIRPath quantity literals.
const CALENDAR_KEYWORDS: [(&str, &str, CalendarUnit); 8] = [
    ("year", "years", CalendarUnit::Year),
    ("month", "months", CalendarUnit::Month),
    ("week", "weeks", CalendarUnit::Week),
    ("day", "days", CalendarUnit::Day),
    ("hour", "hours", CalendarUnit::Hour),
    ("minute", "minutes", CalendarUnit::Minute),
    ("second", "seconds", CalendarUnit::Second),
    ("millisecond", "milliseconds", CalendarUnit::Millisecond),
];

/// The unit a calendar keyword (singular or plural) names.
pub fn calendar_keyword(word: &str) -> Option<CalendarUnit> {
    CALENDAR_KEYWORDS
        .iter()
        .find(|(one, many, _)| word == *one || word == *many)
        .map(|(_, _, unit)| *unit)
}

/// The unit a date or time can be moved by: calendar keywords and the definite UCUM time
/// units (not `a` or `mo`, whose length varies in calendars).
pub fn date_unit(unit: &str) -> Option<CalendarUnit> {
    calendar_keyword(unit).or(match unit {
        "wk" => Some(CalendarUnit::Week),
        "d" => Some(CalendarUnit::Day),
        "h" => Some(CalendarUnit::Hour),
        "min" => Some(CalendarUnit::Minute),
        "s" => Some(CalendarUnit::Second),
        "ms" => Some(CalendarUnit::Millisecond),
        _ => None,
    })
}

/// A unit as a factor of base units with their exponents. The factor is kept as a fraction
/// so that conversions stay exact until one final division.
#[derive(Debug, Clone, PartialEq)]
struct Canonical {
    numerator: Decimal,
    denominator: Decimal,
    dimensions: BTreeMap<&'static str, i32>,
}

impl Canonical {
    fn scalar(factor: Decimal) -> Canonical {
        Canonical {
            numerator: factor,
            denominator: Decimal::ONE,
            dimensions: BTreeMap::new(),
        }
    }

    fn multiply(mut self, other: &Canonical, sign: i32) -> Option<Canonical> {
        let (numerator, denominator) = if sign > 0 {
            (other.numerator, other.denominator)
        } else {
            (other.denominator, other.numerator)
        };
        self.numerator = self.numerator.checked_mul(numerator)?;
        self.denominator = self.denominator.checked_mul(denominator)?;
        for (dimension, exponent) in &other.dimensions {
            let entry = self.dimensions.entry(dimension).or_insert(0);
            *entry += exponent * sign;
            if *entry == 0 {
                self.dimensions.remove(dimension);
            }
        }
        Some(self)
    }

    fn power(&self, exponent: i32) -> Option<Canonical> {
        let mut result = Canonical::scalar(Decimal::ONE);
        for _ in 0..exponent.unsigned_abs() {
            result = result.multiply(self, exponent.signum())?;
        }
        Some(result)
    }

    /// `value` in base units, as a fraction.
    fn apply(&self, value: Decimal) -> Option<(Decimal, Decimal)> {
        Some((value.checked_mul(self.numerator)?, self.denominator))
    }

    /// The dimensions in UCUM syntax (`g.m-1`), `1` when dimensionless.
    fn unit_text(&self) -> String {
        if self.dimensions.is_empty() {
            return "1".into();
        }
        let parts: Vec<String> = self
            .dimensions
            .iter()
            .map(|(dimension, exponent)| {
                if *exponent == 1 {
                    (*dimension).to_string()
                } else {
                    format!("{dimension}{exponent}")
                }
            })
            .collect();
        parts.join(".")
    }
}

/// Order of two fractions with positive denominators.
fn compare_fractions((a, b): (Decimal, Decimal), (c, d): (Decimal, Decimal)) -> Option<Ordering> {
    Some(a.checked_mul(d)?.compare(c.checked_mul(b)?))
}

/// (symbol, factor, base units, takes SI prefixes).
type Atom = (
    &'static str,
    &'static str,
    &'static [(&'static str, i32)],
    bool,
);

const ATOMS: &[Atom] = &[
    ("m", "1", &[("m", 1)], true),
    ("g", "1", &[("g", 1)], true),
    ("s", "1", &[("s", 1)], true),
    ("rad", "1", &[("rad", 1)], true),
    ("K", "1", &[("K", 1)], true),
    ("C", "1", &[("C", 1)], true),
    ("cd", "1", &[("cd", 1)], true),
    ("mol", "1", &[("mol", 1)], true),
    ("eq", "1", &[("eq", 1)], true),
    ("[iU]", "1", &[("[iU]", 1)], true),
    ("[IU]", "1", &[("[iU]", 1)], true),
    ("L", "0.001", &[("m", 3)], true),
    ("l", "0.001", &[("m", 3)], true),
    ("t", "1000000", &[("g", 1)], true),
    ("Hz", "1", &[("s", -1)], true),
    ("N", "1000", &[("g", 1), ("m", 1), ("s", -2)], true),
    ("Pa", "1000", &[("g", 1), ("m", -1), ("s", -2)], true),
    ("bar", "100000000", &[("g", 1), ("m", -1), ("s", -2)], true),
    (
        "m[Hg]",
        "133322000",
        &[("g", 1), ("m", -1), ("s", -2)],
        true,
    ),
    ("J", "1000", &[("g", 1), ("m", 2), ("s", -2)], true),
    ("cal", "4184", &[("g", 1), ("m", 2), ("s", -2)], true),
    ("W", "1000", &[("g", 1), ("m", 2), ("s", -3)], true),
    ("A", "1", &[("C", 1), ("s", -1)], true),
    (
        "V",
        "1000",
        &[("g", 1), ("m", 2), ("s", -3), ("C", -1)],
        true,
    ),
    ("kat", "1", &[("mol", 1), ("s", -1)], true),
    ("min", "60", &[("s", 1)], false),
    ("h", "3600", &[("s", 1)], false),
    ("d", "86400", &[("s", 1)], false),
    ("wk", "604800", &[("s", 1)], false),
    ("mo", "2629800", &[("s", 1)], false),
    ("a", "31557600", &[("s", 1)], false),
    ("[lb_av]", "453.59237", &[("g", 1)], false),
    ("[oz_av]", "28.349523125", &[("g", 1)], false),
    ("[in_i]", "0.0254", &[("m", 1)], false),
    ("[ft_i]", "0.3048", &[("m", 1)], false),
    ("[yd_i]", "0.9144", &[("m", 1)], false),
    ("[mi_i]", "1609.344", &[("m", 1)], false),
    ("[gal_us]", "0.003785411784", &[("m", 3)], false),
    ("[foz_us]", "0.0000295735295625", &[("m", 3)], false),
    ("%", "0.01", &[], false),
    ("[ppm]", "0.000001", &[], false),
    ("[ppb]", "0.000000001", &[], false),
];

/// SI prefixes as powers of ten.
const PREFIXES: &[(&str, i32)] = &[
    ("da", 1),
    ("Y", 24),
    ("Z", 21),
    ("E", 18),
    ("P", 15),
    ("T", 12),
    ("G", 9),
    ("M", 6),
    ("k", 3),
    ("h", 2),
    ("d", -1),
    ("c", -2),
    ("m", -3),
    ("u", -6),
    ("n", -9),
    ("p", -12),
    ("f", -15),
    ("a", -18),
    ("z", -21),
    ("y", -24),
];

fn power_of_ten(exponent: i32) -> Option<Decimal> {
    if exponent >= 0 {
        Some(Decimal::new(
            10_i128.checked_pow(exponent.unsigned_abs())?,
            0,
        ))
    } else {
        Some(Decimal::new(1, exponent.unsigned_abs()))
    }
}

fn atom(symbol: &str) -> Option<Canonical> {
    let from = |(_, factor, dims, _): &Atom| -> Option<Canonical> {
        Some(Canonical {
            numerator: Decimal::parse(factor)?,
            denominator: Decimal::ONE,
            dimensions: dims.iter().copied().collect(),
        })
    };
    if let Some(entry) = ATOMS.iter().find(|entry| entry.0 == symbol) {
        return from(entry);
    }
    for (prefix, exponent) in PREFIXES {
        if let Some(rest) = symbol.strip_prefix(prefix)
            && let Some(entry) = ATOMS.iter().find(|entry| entry.0 == rest && entry.3)
        {
            return from(entry)?.multiply(&Canonical::scalar(power_of_ten(*exponent)?), 1);
        }
    }
    None
}

/// One UCUM component: `10*3`, `1000`, `cm2`, `s-1`, `{annotation}`, `g{total}`.
fn component(text: &str) -> Option<Canonical> {
    let text = match text.find('{') {
        Some(at) if text.ends_with('}') => &text[..at],
        _ => text,
    };
    if text.is_empty() {
        return Some(Canonical::scalar(Decimal::ONE));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Canonical::scalar(Decimal::parse(text)?));
    }
    if let Some(exponent) = text
        .strip_prefix("10*")
        .or_else(|| text.strip_prefix("10^"))
    {
        return Some(Canonical::scalar(power_of_ten(exponent.parse().ok()?)?));
    }
    let split = text.trim_end_matches(|c: char| c.is_ascii_digit());
    let (symbol, exponent) = if split.len() < text.len() {
        let symbol = split.trim_end_matches(['+', '-']);
        (symbol, text[symbol.len()..].parse::<i32>().ok()?)
    } else {
        (text, 1)
    };
    if !(-8..=8).contains(&exponent) {
        return None;
    }
    atom(symbol)?.power(exponent)
}

/// A UCUM unit expression: components joined by `.` and `/`, with parentheses.
fn parse_unit(text: &str) -> Option<Canonical> {
    fn term(chars: &[char], at: &mut usize, depth: usize) -> Option<Canonical> {
        if depth > 8 {
            return None;
        }
        let mut result = Canonical::scalar(Decimal::ONE);
        let mut sign = 1;
        if chars.get(*at) == Some(&'/') {
            sign = -1;
            *at += 1;
        }
        loop {
            let part = if chars.get(*at) == Some(&'(') {
                *at += 1;
                let inner = term(chars, at, depth + 1)?;
                if chars.get(*at) != Some(&')') {
                    return None;
                }
                *at += 1;
                inner
            } else {
                let start = *at;
                let mut in_brackets = false;
                while let Some(c) = chars.get(*at) {
                    match c {
                        '[' | '{' => in_brackets = true,
                        ']' | '}' => in_brackets = false,
                        '.' | '/' | '(' | ')' if !in_brackets => break,
                        _ => {}
                    }
                    *at += 1;
                }
                let text: String = chars[start..*at].iter().collect();
                component(&text)?
            };
            result = result.multiply(&part, sign)?;
            match chars.get(*at) {
                Some('.') => sign = 1,
                Some('/') => sign = -1,
                _ => return Some(result),
            }
            *at += 1;
        }
    }
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() || chars.len() > 128 {
        return None;
    }
    let mut at = 0;
    let unit = term(&chars, &mut at, 0)?;
    (at == chars.len()).then_some(unit)
}

/// The canonical form of a quantity's unit; calendar years and months get their own
/// dimension, the other calendar keywords are seconds.
fn canonical_unit(unit: &str) -> Option<Canonical> {
    match calendar_keyword(unit) {
        Some(CalendarUnit::Year) => Some(Canonical {
            numerator: Decimal::from_i64(12),
            denominator: Decimal::ONE,
            dimensions: [("calendar-month", 1)].into_iter().collect(),
        }),
        Some(CalendarUnit::Month) => Some(Canonical {
            numerator: Decimal::ONE,
            denominator: Decimal::ONE,
            dimensions: [("calendar-month", 1)].into_iter().collect(),
        }),
        Some(CalendarUnit::Week) => parse_unit("wk"),
        Some(CalendarUnit::Day) => parse_unit("d"),
        Some(CalendarUnit::Hour) => parse_unit("h"),
        Some(CalendarUnit::Minute) => parse_unit("min"),
        Some(CalendarUnit::Second) => parse_unit("s"),
        Some(CalendarUnit::Millisecond) => parse_unit("ms"),
        None => parse_unit(unit),
    }
}

/// Whether two unit texts name the same unit without conversion.
fn same_unit(a: &str, b: &str) -> bool {
    a == b || calendar_keyword(a).is_some_and(|unit| calendar_keyword(b) == Some(unit))
}

impl Quantity {
    pub fn new(value: Decimal, unit: impl Into<String>) -> Quantity {
        Quantity {
            value,
            unit: unit.into(),
        }
    }

    /// `1`, `1.5 'mg'`, `4 days` (the text form `toQuantity()` accepts).
    pub fn parse(text: &str) -> Option<Quantity> {
        let text = text.trim();
        let (number, unit) = match text.find(char::is_whitespace) {
            Some(at) => (&text[..at], text[at..].trim()),
            None => (text, ""),
        };
        let value = Decimal::parse(number).filter(|_| {
            number
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
        })?;
        let unit = if unit.is_empty() {
            "1".to_string()
        } else if let Some(quoted) = unit.strip_prefix('\'').and_then(|u| u.strip_suffix('\'')) {
            quoted.to_string()
        } else if calendar_keyword(unit).is_some() {
            unit.to_string()
        } else {
            return None;
        };
        Some(Quantity { value, unit })
    }

    /// The value in base units (as a fraction) and the base units.
    fn canonical(&self) -> Option<((Decimal, Decimal), Canonical)> {
        let unit = canonical_unit(&self.unit)?;
        Some((unit.apply(self.value)?, unit))
    }

    /// Order of two quantities; `None` when their units cannot be compared.
    pub fn compare(&self, other: &Quantity) -> Option<Ordering> {
        if same_unit(&self.unit, &other.unit) {
            return Some(self.value.compare(other.value));
        }
        let (a, a_unit) = self.canonical()?;
        let (b, b_unit) = other.canonical()?;
        if a_unit.dimensions != b_unit.dimensions {
            return None;
        }
        compare_fractions(a, b)
    }

    /// Equivalence: equal at the precision of the less precise value, after conversion.
    pub fn equivalent(&self, other: &Quantity) -> bool {
        if same_unit(&self.unit, &other.unit) {
            return self.value.equivalent(other.value);
        }
        let converted = other.convert(&self.unit);
        // The converted value is only as precise as the value it came from.
        converted.is_some_and(|converted| {
            let scale = self.value.scale().min(
                other
                    .value
                    .scale()
                    .max(converted.value.normalized().scale()),
            );
            match (self.value.round(scale), converted.value.round(scale)) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            }
        })
    }

    pub fn comparable(&self, other: &Quantity) -> bool {
        self.compare(other).is_some()
    }

    /// The quantity in `unit`, when the units are compatible.
    pub fn convert(&self, unit: &str) -> Option<Quantity> {
        if same_unit(&self.unit, unit) {
            return Some(Quantity::new(self.value, unit));
        }
        let ((numerator, denominator), from) = self.canonical()?;
        let to = canonical_unit(unit)?;
        if from.dimensions != to.dimensions {
            return None;
        }
        let converted = numerator
            .checked_mul(to.denominator)?
            .checked_div(denominator.checked_mul(to.numerator)?)?;
        Some(Quantity::new(converted, unit))
    }

    /// Sum (or difference) in the unit of `self`.
    pub fn add(&self, other: &Quantity, subtract: bool) -> Option<Quantity> {
        let other = other.convert(&self.unit)?;
        let value = if subtract {
            self.value.checked_sub(other.value)?
        } else {
            self.value.checked_add(other.value)?
        };
        Some(Quantity::new(value, self.unit.clone()))
    }

    /// Product (or quotient) in base units.
    pub fn multiply(&self, other: &Quantity, divide: bool) -> Option<Quantity> {
        if calendar_keyword(&self.unit).is_some() || calendar_keyword(&other.unit).is_some() {
            return None;
        }
        let ((a, a_denominator), a_unit) = self.canonical()?;
        let ((b, b_denominator), b_unit) = other.canonical()?;
        let (numerator, denominator) = if divide {
            (a.checked_mul(b_denominator)?, a_denominator.checked_mul(b)?)
        } else {
            (a.checked_mul(b)?, a_denominator.checked_mul(b_denominator)?)
        };
        let value = if denominator == Decimal::ONE {
            numerator
        } else {
            numerator.checked_div(denominator)?
        };
        let unit = a_unit.multiply(&b_unit, if divide { -1 } else { 1 })?;
        Some(Quantity::new(value, unit.unit_text()))
    }

    pub fn is_calendar(&self) -> bool {
        calendar_keyword(&self.unit).is_some()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_calendar() {
            write!(f, "{} {}", self.value, self.unit)
        } else {
            write!(f, "{} '{}'", self.value, self.unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(value: &str, unit: &str) -> Quantity {
        Quantity::new(Decimal::parse(value).unwrap_or(Decimal::ZERO), unit)
    }

    #[test]
    fn ucum_units_convert() {
        assert_eq!(
            q("4.0000", "g").compare(&q("4000.0", "mg")),
            Some(Ordering::Equal)
        );
        assert!(q("4", "g").equivalent(&q("4040", "mg")));
        assert_eq!(q("7", "days").compare(&q("1", "wk")), Some(Ordering::Equal));
        assert_eq!(q("1", "month").compare(&q("1", "mo")), None);
        assert_eq!(
            q("1", "year").compare(&q("12", "months")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            q("185", "[lb_av]").compare(&q("100", "kg")),
            Some(Ordering::Less)
        );
        assert!(q("1", "cm").comparable(&q("1", "[in_i]")));
        assert!(!q("1", "cm").comparable(&q("1", "s")));
        assert_eq!(
            q("1", "mm[Hg]").compare(&q("133.322", "Pa")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            q("1", "mL/min").compare(&q("0.001", "L/min")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            q("1", "kg/(m.s2)").compare(&q("1", "Pa")),
            Some(Ordering::Equal)
        );
    }

    #[test]
    fn products_use_base_units() {
        let area = q("2.0", "cm").multiply(&q("2.0", "m"), false);
        assert_eq!(
            area.as_ref().and_then(|a| a.compare(&q("0.040", "m2"))),
            Some(Ordering::Equal)
        );
        let ratio = q("4.0", "g").multiply(&q("2.0", "m"), true);
        assert_eq!(
            ratio.and_then(|r| r.compare(&q("2", "g/m"))),
            Some(Ordering::Equal)
        );
        assert_eq!(
            q("1.0", "m").multiply(&q("1.0", "m"), true).map(|r| r.unit),
            Some("1".into())
        );
    }

    #[test]
    fn text_forms_parse() {
        assert_eq!(Quantity::parse("1 'wk'"), Some(q("1", "wk")));
        assert_eq!(Quantity::parse("1 day"), Some(q("1", "day")));
        assert_eq!(Quantity::parse("1.0"), Some(q("1.0", "1")));
        assert!(Quantity::parse("1 wk").is_none());
        assert!(Quantity::parse("1.a").is_none());
        assert_eq!(q("1", "week").to_string(), "1 week");
        assert_eq!(q("1", "wk").to_string(), "1 'wk'");
    }
}
