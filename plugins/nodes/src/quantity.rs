//! Kubernetes resource quantities, the strings of `status.capacity` and
//! `status.allocatable` (`resource.Quantity` in k8s.io/apimachinery).
//!
//! The grammar, as the Quantity API reference gives it:
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <sign>            ::= "+" | "-"
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
//! ```
//!
//! The exponent after `e` or `E` must be an integer, because apimachinery
//! reads it with `strconv.ParseInt`. A lone `E` is the exa suffix.
//!
//! The parser keeps the value exact, as decimal digits and a power of ten, so
//! `0.1`, `1.5Gi` and `1e-3` convert without floating-point error and a value
//! too large for `u64` is reported instead of wrapped or saturated.

use std::fmt;

/// Reason a quantity string was not converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityError {
    /// The string does not follow the quantity grammar.
    Invalid,
    /// The quantity is below zero, which no capacity can be.
    Negative,
    /// The converted amount does not fit in a `u64`.
    OutOfRange,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Invalid => "not a valid Kubernetes quantity",
            Self::Negative => "negative",
            Self::OutOfRange => "too large for a 64-bit amount",
        })
    }
}

/// Rounding mode of [`Quantity::to_u64`] for a fractional result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Toward zero, as the WIT documents for extended resources.
    Down,
    /// Away from zero, as apimachinery's `Quantity.Value` and `MilliValue`
    /// do (both return `ceil(q * 10^scale)`).
    Up,
}

/// An exactly represented quantity: `digits × 10^exponent`, negated when
/// `negative` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// Decimal digits, most significant first, with no leading or trailing
    /// zeros. Empty for zero.
    digits: Vec<u8>,
    exponent: i64,
}

impl Quantity {
    pub fn is_negative(&self) -> bool {
        self.negative && !self.digits.is_empty()
    }

    /// Converts the quantity to an integer count of `10^-scale` units:
    /// scale 0 gives whole units (bytes, pods), scale 3 gives millis
    /// (millicores).
    pub fn to_u64(&self, scale: u32, rounding: Rounding) -> Result<u64, QuantityError> {
        if self.digits.is_empty() {
            return Ok(0);
        }
        if self.negative {
            return Err(QuantityError::Negative);
        }
        let exponent = self.exponent.checked_add(i64::from(scale)).ok_or(QuantityError::OutOfRange)?;

        if exponent >= 0 {
            // u64::MAX has 20 digits, so a longer integer cannot fit.
            let zeros = u32::try_from(exponent).map_err(|_| QuantityError::OutOfRange)?;
            if self.digits.len() as u64 + u64::from(zeros) > 20 {
                return Err(QuantityError::OutOfRange);
            }
            let mantissa = digits_to_u64(&self.digits)?;
            let power = 10u64.checked_pow(zeros).ok_or(QuantityError::OutOfRange)?;
            return mantissa.checked_mul(power).ok_or(QuantityError::OutOfRange);
        }

        // A negative exponent always leaves a non-zero fraction, because the
        // digits carry no trailing zeros.
        let fraction_digits = usize::try_from(exponent.unsigned_abs()).unwrap_or(usize::MAX);
        let integer_digits = self.digits.len().saturating_sub(fraction_digits);
        let truncated = digits_to_u64(&self.digits[..integer_digits])?;
        match rounding {
            Rounding::Down => Ok(truncated),
            Rounding::Up => truncated.checked_add(1).ok_or(QuantityError::OutOfRange),
        }
    }
}

/// Parses a quantity string. Leading or trailing whitespace is invalid, as it
/// is for apimachinery.
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    let bytes = text.as_bytes();
    let mut position = 0;

    let negative = match bytes.first() {
        Some(b'-') => {
            position += 1;
            true
        }
        Some(b'+') => {
            position += 1;
            false
        }
        _ => false,
    };

    let integer_part = take_digits(bytes, &mut position);
    let mut fraction_part: &[u8] = &[];
    if bytes.get(position) == Some(&b'.') {
        position += 1;
        fraction_part = take_digits(bytes, &mut position);
    }
    if integer_part.is_empty() && fraction_part.is_empty() {
        return Err(QuantityError::Invalid);
    }

    let multiplier = parse_suffix(&text[position..])?;

    let mut digits: Vec<u8> = integer_part.iter().chain(fraction_part).map(|digit| digit - b'0').collect();
    let fraction_length = i64::try_from(fraction_part.len()).map_err(|_| QuantityError::Invalid)?;
    let mut exponent = multiplier.power_of_ten.checked_sub(fraction_length).ok_or(QuantityError::Invalid)?;
    if multiplier.power_of_two > 0 {
        multiply_digits(&mut digits, 1u64 << multiplier.power_of_two);
    }
    normalize(&mut digits, &mut exponent)?;

    Ok(Quantity { negative, digits, exponent })
}

/// The factor a suffix stands for: `2^power_of_two × 10^power_of_ten`.
struct Multiplier {
    power_of_two: u32,
    power_of_ten: i64,
}

fn parse_suffix(suffix: &str) -> Result<Multiplier, QuantityError> {
    let decimal = |power_of_ten| Ok(Multiplier { power_of_two: 0, power_of_ten });
    let binary = |power_of_two| Ok(Multiplier { power_of_two, power_of_ten: 0 });
    match suffix {
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exponent) => decimal(parse_exponent(exponent)?),
            None => Err(QuantityError::Invalid),
        },
    }
}

/// Parses the signed integer after `e` or `E`.
fn parse_exponent(text: &str) -> Result<i64, QuantityError> {
    let (negative, digits) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(QuantityError::Invalid);
    }
    let mut value: i64 = 0;
    for digit in digits {
        value = value
            .checked_mul(10)
            .and_then(|value| value.checked_add(i64::from(digit - b'0')))
            .ok_or(QuantityError::Invalid)?;
    }
    Ok(if negative { -value } else { value })
}

fn take_digits<'a>(bytes: &'a [u8], position: &mut usize) -> &'a [u8] {
    let start = *position;
    while bytes.get(*position).is_some_and(u8::is_ascii_digit) {
        *position += 1;
    }
    &bytes[start..*position]
}

/// Multiplies a most-significant-first digit string by `factor` in place.
fn multiply_digits(digits: &mut Vec<u8>, factor: u64) {
    let mut carry: u128 = 0;
    for digit in digits.iter_mut().rev() {
        let product = u128::from(*digit) * u128::from(factor) + carry;
        *digit = (product % 10) as u8;
        carry = product / 10;
    }
    let mut head = Vec::new();
    while carry > 0 {
        head.push((carry % 10) as u8);
        carry /= 10;
    }
    head.reverse();
    digits.splice(0..0, head);
}

/// Drops leading zeros and moves trailing zeros into the exponent, so that
/// zero is the empty digit string and every value has one representation.
fn normalize(digits: &mut Vec<u8>, exponent: &mut i64) -> Result<(), QuantityError> {
    let leading = digits.iter().take_while(|&&digit| digit == 0).count();
    digits.drain(..leading);
    let trailing = digits.iter().rev().take_while(|&&digit| digit == 0).count();
    digits.truncate(digits.len() - trailing);
    if digits.is_empty() {
        *exponent = 0;
        return Ok(());
    }
    let shift = i64::try_from(trailing).map_err(|_| QuantityError::OutOfRange)?;
    *exponent = exponent.checked_add(shift).ok_or(QuantityError::OutOfRange)?;
    Ok(())
}

fn digits_to_u64(digits: &[u8]) -> Result<u64, QuantityError> {
    digits.iter().try_fold(0u64, |value, &digit| {
        value.checked_mul(10).and_then(|value| value.checked_add(u64::from(digit))).ok_or(QuantityError::OutOfRange)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILLI: u32 = 3;
    const UNIT: u32 = 0;
    const KI: u64 = 1 << 10;
    const GI: u64 = 1 << 30;

    fn convert(text: &str, scale: u32, rounding: Rounding) -> Result<u64, QuantityError> {
        parse_quantity(text)?.to_u64(scale, rounding)
    }

    #[test]
    fn grammar_table() {
        use QuantityError::*;
        use Rounding::*;
        let cases: &[(&str, u32, Rounding, Result<u64, QuantityError>)] = &[
            // Plain numbers and the decimal point.
            ("64", MILLI, Up, Ok(64_000)),
            ("0", UNIT, Up, Ok(0)),
            ("0.5", MILLI, Up, Ok(500)),
            (".5", MILLI, Up, Ok(500)),
            ("5.", UNIT, Up, Ok(5)),
            ("1.G", UNIT, Up, Ok(1_000_000_000)),
            ("+3", UNIT, Up, Ok(3)),
            ("-0", UNIT, Up, Ok(0)),
            ("007", UNIT, Up, Ok(7)),
            ("1.000000000000000000000000000000000000000", UNIT, Up, Ok(1)),
            // Decimal SI suffixes.
            ("100m", MILLI, Up, Ok(100)),
            ("3500m", MILLI, Up, Ok(3500)),
            ("1500m", UNIT, Down, Ok(1)),
            ("1500m", UNIT, Up, Ok(2)),
            ("250u", MILLI, Up, Ok(1)),
            ("250u", MILLI, Down, Ok(0)),
            ("5n", UNIT, Up, Ok(1)),
            ("2k", UNIT, Up, Ok(2_000)),
            ("12M", UNIT, Up, Ok(12_000_000)),
            ("1G", UNIT, Up, Ok(1_000_000_000)),
            ("3T", UNIT, Up, Ok(3_000_000_000_000)),
            ("2P", UNIT, Up, Ok(2_000_000_000_000_000)),
            ("9E", UNIT, Up, Ok(9_000_000_000_000_000_000)),
            // Binary SI suffixes.
            ("1Ki", UNIT, Up, Ok(KI)),
            ("527921152Ki", UNIT, Up, Ok(527_921_152 * KI)),
            ("1.5Gi", UNIT, Up, Ok(3 * GI / 2)),
            ("0.5Ki", UNIT, Up, Ok(512)),
            ("0.001Ki", UNIT, Up, Ok(2)),
            ("0.001Ki", UNIT, Down, Ok(1)),
            ("1Ti", UNIT, Up, Ok(1 << 40)),
            ("1Pi", UNIT, Up, Ok(1 << 50)),
            ("15Ei", UNIT, Up, Ok(15 << 60)),
            // Decimal exponents.
            ("1e3", UNIT, Up, Ok(1_000)),
            ("12E6", UNIT, Up, Ok(12_000_000)),
            ("1e+3", UNIT, Up, Ok(1_000)),
            ("1E-3", MILLI, Up, Ok(1)),
            ("1.5e1", UNIT, Up, Ok(15)),
            ("1e-999999", UNIT, Up, Ok(1)),
            ("1e-999999", UNIT, Down, Ok(0)),
            ("0e999999", UNIT, Up, Ok(0)),
            // Negative values parse but are no capacity.
            ("-1", UNIT, Up, Err(Negative)),
            ("-100m", MILLI, Up, Err(Negative)),
            ("-0.5", UNIT, Down, Err(Negative)),
            // Overflow of u64 is reported, never wrapped.
            ("9999999999999999999999E", UNIT, Up, Err(OutOfRange)),
            ("18446744073709551615", UNIT, Up, Ok(u64::MAX)),
            ("18446744073709551616", UNIT, Up, Err(OutOfRange)),
            ("18446744073709551615", MILLI, Up, Err(OutOfRange)),
            ("18446744073709551614.5", UNIT, Up, Ok(u64::MAX)),
            ("18446744073709551615.5", UNIT, Up, Err(OutOfRange)),
            ("16Ei", UNIT, Up, Err(OutOfRange)),
            ("1e20", UNIT, Up, Err(OutOfRange)),
            ("1e9223372036854775807", MILLI, Up, Err(OutOfRange)),
            ("99999999999999999999999999999999999999999", UNIT, Up, Err(OutOfRange)),
            // Malformed strings.
            ("", UNIT, Up, Err(Invalid)),
            ("-", UNIT, Up, Err(Invalid)),
            (".", UNIT, Up, Err(Invalid)),
            ("+.", UNIT, Up, Err(Invalid)),
            ("Ki", UNIT, Up, Err(Invalid)),
            ("1ki", UNIT, Up, Err(Invalid)),
            ("1KiB", UNIT, Up, Err(Invalid)),
            ("1K", UNIT, Up, Err(Invalid)),
            ("1e", UNIT, Up, Err(Invalid)),
            ("1e+", UNIT, Up, Err(Invalid)),
            ("1e1.5", UNIT, Up, Err(Invalid)),
            ("1e99999999999999999999", UNIT, Up, Err(Invalid)),
            ("1.5.5", UNIT, Up, Err(Invalid)),
            ("--1", UNIT, Up, Err(Invalid)),
            (" 1", UNIT, Up, Err(Invalid)),
            ("1 ", UNIT, Up, Err(Invalid)),
            ("1 Gi", UNIT, Up, Err(Invalid)),
            ("0x10", UNIT, Up, Err(Invalid)),
            ("NaN", UNIT, Up, Err(Invalid)),
            ("Inf", UNIT, Up, Err(Invalid)),
            ("garbage", UNIT, Up, Err(Invalid)),
            ("١٢", UNIT, Up, Err(Invalid)),
            ("1Gi\u{0}", UNIT, Up, Err(Invalid)),
        ];
        for (text, scale, rounding, expected) in cases {
            assert_eq!(convert(text, *scale, *rounding), *expected, "{text:?} at scale {scale}, rounding {rounding:?}");
        }
    }

    #[test]
    fn negative_zero_is_not_negative() {
        let zero = parse_quantity("-0.000").expect("-0.000 is a valid quantity");
        assert!(!zero.is_negative());
        assert!(parse_quantity("-1m").expect("-1m is a valid quantity").is_negative());
    }

    #[test]
    fn equal_values_normalize_alike() {
        let canonical = parse_quantity("1536Mi").expect("1536Mi is a valid quantity");
        assert_eq!(parse_quantity("1.5Gi"), Ok(canonical.clone()));
        assert_eq!(parse_quantity("1610612736"), Ok(canonical.clone()));
        assert_eq!(parse_quantity("1610612736000m"), Ok(canonical));
    }

    /// Runs the parser over pseudo-random strings from the quantity alphabet
    /// (a fixed-seed xorshift generator, so failures reproduce) to check that
    /// no input panics.
    #[test]
    fn arbitrary_input_does_not_panic() {
        const ALPHABET: &[u8] = b"0123456789.+-eEnumkKMGTPiI x\xc3\xa9";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let length = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..length).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(quantity) = parse_quantity(&text) {
                for scale in [UNIT, MILLI] {
                    let down = quantity.to_u64(scale, Rounding::Down);
                    let up = quantity.to_u64(scale, Rounding::Up);
                    if let (Ok(down), Ok(up)) = (down, up) {
                        assert!(up == down || up == down + 1, "{text:?}: rounding down gave {down}, up gave {up}");
                    }
                }
            }
        }
    }
}
