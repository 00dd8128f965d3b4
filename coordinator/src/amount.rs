//! Work amounts as operators type them: hashes with SI suffixes (`500M`, `2.5G`, `1T`), parsed
//! exactly with integer arithmetic, and printed back the same way.

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid amount {0:?}: expected a number of hashes with an optional k, M, G, T, P or E suffix, e.g. 500M or 2.5G"
)]
pub struct AmountError(pub String);

/// Parses `2.5G` as 2_500_000_000. Fractions must resolve to whole hashes; nothing else may
/// surround the number (no spaces).
pub fn parse_amount(s: &str) -> Result<u128, AmountError> {
    let err = || AmountError(s.to_string());
    let t = s;
    let (number, scale): (&str, u32) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let exp = match c {
                'k' | 'K' => 3,
                'M' => 6,
                'G' => 9,
                'T' => 12,
                'P' => 15,
                'E' => 18,
                _ => return Err(err()),
            };
            (&t[..i], exp)
        }
        _ => (t, 0),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return Err(err());
    }
    if frac.len() as u32 > scale && frac[scale as usize..].chars().any(|c| c != '0') {
        return Err(err());
    }
    let frac = &frac[..frac.len().min(scale as usize)];
    let digits = format!("{int}{frac}{}", "0".repeat((scale as usize) - frac.len()));
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    digits.parse::<u128>().map_err(|_| err())
}

/// 2_500_000_000 as "2.50 G".
pub fn format_amount(v: u128) -> String {
    let units = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let f = v as f64;
    match units.iter().find(|(s, _)| f >= *s) {
        Some((s, u)) => format!("{:.2} {u}", f / s),
        None => format!("{v} "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("500M"), Ok(500_000_000));
        assert_eq!(parse_amount("2.5G"), Ok(2_500_000_000));
        assert_eq!(parse_amount("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_amount("2P"), Ok(2_000_000_000_000_000));
        assert_eq!(parse_amount("12345"), Ok(12345));
        assert_eq!(parse_amount("1.5k"), Ok(1500));
        assert_eq!(parse_amount("0.0000015G"), Ok(1500));
        for bad in
            ["", "G", "1.5", "1.0001k", "-5", "5X", "1e9", "1..2M", "999999999999999999999999999999999999999999E"]
                .into_iter()
                .chain([" 500M", "500M ", "500 M", "\t500M", "500M\n", "+500M"])
        {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(format_amount(2_500_000_000), "2.50 G");
        assert_eq!(format_amount(12), "12 ");
        // Amounts above u64::MAX are amounts like any other.
        assert_eq!(parse_amount("20E"), Ok(20_000_000_000_000_000_000));
    }
}
