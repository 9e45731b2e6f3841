//! Exact decimals for FHIRPath `Decimal`: a scaled 128-bit integer that keeps the number of
//! digits written after the point, so `1.0` and `1.00` compare equal but print as written and
//! report their own `precision()`.

use std::cmp::Ordering;
use std::fmt;

/// The most digits kept after the point (FHIRPath requires at least 8).
pub const MAX_SCALE: u32 = 28;
/// The digits a division keeps after the point before trailing zeros are dropped.
const DIVISION_SCALE: u32 = 16;

/// A decimal number `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

fn pow10(exponent: u32) -> Option<i128> {
    10_i128.checked_pow(exponent)
}

impl Decimal {
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        scale: 0,
    };
    pub const ONE: Decimal = Decimal {
        mantissa: 1,
        scale: 0,
    };

    pub fn new(mantissa: i128, scale: u32) -> Decimal {
        Decimal { mantissa, scale }
    }

    pub fn from_i64(value: i64) -> Decimal {
        Decimal {
            mantissa: i128::from(value),
            scale: 0,
        }
    }

    /// Parses JSON or FHIRPath number text (`-1.50`, `2e3`); `None` if it is not a number or
    /// needs more digits than are kept.
    pub fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim();
        let (mantissa_text, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (negative, digits) = match mantissa_text.as_bytes().first()? {
            b'-' => (true, &mantissa_text[1..]),
            b'+' => (false, &mantissa_text[1..]),
            _ => (false, mantissa_text),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (digits, ""),
        };
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        if digits.contains('.') && fraction.is_empty() {
            return None;
        }
        let mut mantissa: i128 = 0;
        for byte in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(byte - b'0'))?;
        }
        let mut scale = i64::try_from(fraction.len()).ok()? - i64::from(exponent);
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            scale += 1;
        }
        let mut value = Decimal {
            mantissa: if negative { -mantissa } else { mantissa },
            scale: u32::try_from(scale).ok()?,
        };
        if value.scale > MAX_SCALE {
            value = value.round(MAX_SCALE)?;
        }
        Some(value)
    }

    /// Converts a float result (of `sqrt`, `ln`, ...) keeping 15 significant digits, which
    /// drops the binary noise of the last digits.
    pub fn from_f64(value: f64) -> Option<Decimal> {
        if !value.is_finite() {
            return None;
        }
        Decimal::parse(&format!("{value:.14e}")).map(Decimal::normalized)
    }

    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    /// Digits after the point as written.
    pub fn scale(self) -> u32 {
        self.scale
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The value as an integer when it has no fractional part.
    pub fn to_i64(self) -> Option<i64> {
        let divisor = pow10(self.scale)?;
        if self.mantissa % divisor != 0 {
            return None;
        }
        i64::try_from(self.mantissa / divisor).ok()
    }

    /// The same value without trailing zeros after the point.
    pub fn normalized(self) -> Decimal {
        let mut value = self;
        while value.scale > 0 && value.mantissa % 10 == 0 {
            value.mantissa /= 10;
            value.scale -= 1;
        }
        value
    }

    /// The same value written with `scale` digits after the point (rounding half away from
    /// zero when digits are dropped).
    pub fn round(self, scale: u32) -> Option<Decimal> {
        match scale.cmp(&self.scale) {
            Ordering::Equal => Some(self),
            Ordering::Greater => Some(Decimal {
                mantissa: self.mantissa.checked_mul(pow10(scale - self.scale)?)?,
                scale,
            }),
            Ordering::Less => {
                let divisor = pow10(self.scale - scale)?;
                let quotient = self.mantissa / divisor;
                let remainder = (self.mantissa % divisor).abs();
                let rounded = if remainder * 2 >= divisor {
                    quotient + self.mantissa.signum()
                } else {
                    quotient
                };
                Some(Decimal {
                    mantissa: rounded,
                    scale,
                })
            }
        }
    }

    /// The same value cut to `scale` digits after the point (towards zero).
    pub fn truncate_to(self, scale: u32) -> Option<Decimal> {
        if scale >= self.scale {
            return self.round(scale);
        }
        let divisor = pow10(self.scale - scale)?;
        Some(Decimal {
            mantissa: self.mantissa / divisor,
            scale,
        })
    }

    /// The integer part, towards zero.
    pub fn trunc(self) -> Option<i64> {
        i64::try_from(self.mantissa / pow10(self.scale)?).ok()
    }

    pub fn floor(self) -> Option<i64> {
        let divisor = pow10(self.scale)?;
        let quotient = self.mantissa.div_euclid(divisor);
        i64::try_from(quotient).ok()
    }

    pub fn ceiling(self) -> Option<i64> {
        let divisor = pow10(self.scale)?;
        let quotient =
            self.mantissa.div_euclid(divisor) + i128::from(self.mantissa.rem_euclid(divisor) != 0);
        i64::try_from(quotient).ok()
    }

    // Saturating: i128::MIN is the one mantissa without a negation.
    pub fn abs(self) -> Decimal {
        Decimal {
            mantissa: self.mantissa.saturating_abs(),
            scale: self.scale,
        }
    }

    pub fn negate(self) -> Decimal {
        Decimal {
            mantissa: self.mantissa.saturating_neg(),
            scale: self.scale,
        }
    }

    /// Both values at the larger of their scales.
    fn aligned(self, other: Decimal) -> Option<(i128, i128, u32)> {
        let scale = self.scale.max(other.scale);
        let left = self.mantissa.checked_mul(pow10(scale - self.scale)?)?;
        let right = other.mantissa.checked_mul(pow10(scale - other.scale)?)?;
        Some((left, right, scale))
    }

    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let (left, right, scale) = self.aligned(other)?;
        Some(Decimal {
            mantissa: left.checked_add(right)?,
            scale,
        })
    }

    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        self.checked_add(other.negate())
    }

    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        let (a, b) = (self.normalized(), other.normalized());
        let product = Decimal {
            mantissa: a.mantissa.checked_mul(b.mantissa)?,
            scale: a.scale + b.scale,
        };
        let product = if product.scale > MAX_SCALE {
            product.round(MAX_SCALE)?
        } else {
            product
        };
        // Keep the written precision of the operands where the product allows it.
        let wanted = (self.scale + other.scale).min(MAX_SCALE);
        Some(product.round(wanted).unwrap_or(product))
    }

    /// `self / other` to 16 digits after the point, trailing zeros dropped; `None` when
    /// dividing by zero.
    pub fn checked_div(self, other: Decimal) -> Option<Decimal> {
        if other.mantissa == 0 {
            return None;
        }
        let (a, b) = (self.normalized(), other.normalized());
        for scale in (0..=DIVISION_SCALE).rev() {
            // a / b at `scale` digits = a.m * 10^(b.s + scale - a.s) / b.m
            let shift = i64::from(b.scale) + i64::from(scale) - i64::from(a.scale);
            let (numerator, denominator) = if shift >= 0 {
                let Some(numerator) =
                    pow10(u32::try_from(shift).ok()?).and_then(|p| a.mantissa.checked_mul(p))
                else {
                    continue;
                };
                (numerator, b.mantissa)
            } else {
                let Some(denominator) =
                    pow10(u32::try_from(-shift).ok()?).and_then(|p| b.mantissa.checked_mul(p))
                else {
                    continue;
                };
                (a.mantissa, denominator)
            };
            let quotient = numerator.checked_div(denominator)?;
            let remainder = numerator.checked_rem(denominator)?.unsigned_abs();
            let rounded = if remainder.checked_mul(2)? >= denominator.unsigned_abs() {
                quotient + (numerator.signum() * denominator.signum())
            } else {
                quotient
            };
            return Some(
                Decimal {
                    mantissa: rounded,
                    scale,
                }
                .normalized(),
            );
        }
        None
    }

    /// Truncated division (`div`); `None` when dividing by zero.
    pub fn checked_div_trunc(self, other: Decimal) -> Option<Decimal> {
        let (left, right, _) = self.aligned(other)?;
        if right == 0 {
            return None;
        }
        Some(Decimal {
            mantissa: left.checked_div(right)?,
            scale: 0,
        })
    }

    /// The remainder of truncated division (`mod`); `None` when dividing by zero.
    pub fn checked_rem(self, other: Decimal) -> Option<Decimal> {
        let (left, right, scale) = self.aligned(other)?;
        if right == 0 {
            return None;
        }
        Some(Decimal {
            mantissa: left.checked_rem(right)?,
            scale,
        })
    }

    /// Numeric order, independent of the written scales.
    pub fn compare(self, other: Decimal) -> Ordering {
        if let Some((left, right, _)) = self.aligned(other) {
            return left.cmp(&right);
        }
        // Alignment overflowed: compare whole parts, then fractions.
        let (Some(a_unit), Some(b_unit)) = (pow10(self.scale), pow10(other.scale)) else {
            return self.to_f64().total_cmp(&other.to_f64());
        };
        let whole = (self.mantissa / a_unit).cmp(&(other.mantissa / b_unit));
        if whole != Ordering::Equal {
            return whole;
        }
        let fractions = Decimal {
            mantissa: self.mantissa % a_unit,
            scale: self.scale,
        }
        .aligned(Decimal {
            mantissa: other.mantissa % b_unit,
            scale: other.scale,
        });
        fractions.map_or(Ordering::Equal, |(left, right, _)| left.cmp(&right))
    }

    /// Equivalence (`~`): equal when rounded to the precision of the less precise value.
    pub fn equivalent(self, other: Decimal) -> bool {
        let scale = self.scale.min(other.scale);
        match (self.round(scale), other.round(scale)) {
            (Some(a), Some(b)) => a.compare(b) == Ordering::Equal,
            _ => false,
        }
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.compare(*other) == Ordering::Equal
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = if digits.len() <= scale {
            format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
        } else {
            digits
        };
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or(Decimal::ZERO)
    }

    #[test]
    fn decimals_keep_their_written_precision() {
        assert_eq!(d("1.50").to_string(), "1.50");
        assert_eq!(d("-0.05").to_string(), "-0.05");
        assert_eq!(d("2e3").to_string(), "2000");
        assert_eq!(d("1.5E-2").to_string(), "0.015");
        assert!(Decimal::parse("1.").is_none());
        assert!(Decimal::parse(".5").is_none());
        assert!(Decimal::parse("1.a").is_none());
        assert_eq!(d("1.10"), d("1.1"));
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(
            d("1.8").checked_sub(d("1.2")).map(|v| v.to_string()),
            Some("0.6".into())
        );
        assert_eq!(
            d("2.2").checked_rem(d("1.8")).map(|v| v.to_string()),
            Some("0.4".into())
        );
        assert_eq!(
            d("1.2").checked_mul(d("1.8")).map(|v| v.to_string()),
            Some("2.16".into())
        );
        assert_eq!(
            d("1").checked_div(d("2")).map(|v| v.to_string()),
            Some("0.5".into())
        );
        assert_eq!(
            d("1.2")
                .checked_div(d("1.8"))
                .and_then(|v| v.round(2))
                .map(|v| v.to_string()),
            Some("0.67".into())
        );
        assert!(d("1").checked_div(d("0")).is_none());
        assert!(
            d("1.2")
                .checked_div(d("1.8"))
                .is_some_and(|v| v.equivalent(d("0.67")))
        );
        assert_eq!(d("-2.1").floor(), Some(-3));
        assert_eq!(d("-1.1").ceiling(), Some(-1));
        assert_eq!(d("-1.56").trunc(), Some(-1));
    }
}
