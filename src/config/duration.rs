//! The one duration syntax forkyard accepts: `250ms`, `5s`, `1m30s`.
//!
//! Strict on purpose: no whitespace, no bare numbers (is `30` seconds or
//! milliseconds?), no spelled-out units. A number is one or more ASCII digits and
//! every number carries a unit: `ns`, `us`, `ms`, `s`, `m`, `h` or `d`.
//!
//! Parsed by hand because `humantime::parse_duration` is lenient where this is
//! strict: it accepts `"5 sec"`, `"5seconds"`, `"1m 30s"`, `"1.5s"`, a bare `"0"`, and
//! reads `"1M"` as a month. Durations are shown with humantime (`show`).

use std::time::Duration;

/// The hint every duration error ends with.
pub(super) const DURATION_HINT: &str =
    r#"expected e.g. "5s", "250ms", "1m"; bare numbers are not durations"#;

/// Parse a duration such as `"250ms"`, `"5s"` or `"1m30s"`.
///
/// The error is a complete message, e.g.
/// `invalid duration "5 sec" (expected e.g. "5s", "250ms", "1m"; bare numbers are not durations)`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} ({DURATION_HINT})");
    let too_large = || format!("duration {text:?} is too large");
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut pos = 0;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let (digits, unit) = (&text[digits_start..unit_start], &text[unit_start..pos]);
        if digits.is_empty() || unit.is_empty() {
            return Err(invalid());
        }
        let n: u64 = digits.parse().map_err(|_| too_large())?;
        let part = match unit {
            "ns" => Some(Duration::from_nanos(n)),
            "us" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(60 * 60).map(Duration::from_secs),
            "d" => n.checked_mul(24 * 60 * 60).map(Duration::from_secs),
            _ => return Err(invalid()),
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(too_large)?;
    }
    Ok(total)
}

/// Render a duration the way it would be written in the file (`100ms`, `1m 30s`).
pub(super) fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_units_and_compounds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("9ns"), Ok(Duration::from_nanos(9)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_loose_forms() {
        for bad in [
            "", "5", "5 sec", "5 s", " 5s", "5s ", "-1s", "+1s", "5sec", "1.5s", "s", "5S",
            "1m 30s", "5µs", "ms5",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn message_names_the_input_and_the_hint() {
        assert_eq!(
            parse_duration("5 sec").unwrap_err(),
            r#"invalid duration "5 sec" (expected e.g. "5s", "250ms", "1m"; bare numbers are not durations)"#
        );
        assert_eq!(
            parse_duration("99999999999999999999s").unwrap_err(),
            r#"duration "99999999999999999999s" is too large"#
        );
        assert!(parse_duration("999999999999999999d").is_err());
    }

    #[test]
    fn show_matches_the_input_syntax() {
        assert_eq!(show(Duration::from_millis(100)), "100ms");
        assert_eq!(show(Duration::from_secs(30)), "30s");
    }

    proptest! {
        #[test]
        fn seconds_round_trip(n in any::<u32>()) {
            prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n.into())));
        }

        #[test]
        fn millis_round_trip(n in any::<u32>()) {
            prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(n.into())));
        }

        #[test]
        fn whitespace_anywhere_is_rejected(
            n in 0u32..100_000,
            unit in prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d"]),
            ws in prop::sample::select(vec![" ", "\t", "\n", "\r", "\u{a0}", "\u{2003}"]),
            at in 0usize..16,
        ) {
            let valid = format!("{n}{unit}");
            let at = at.min(valid.len());
            let spaced = format!("{}{ws}{}", &valid[..at], &valid[at..]);
            prop_assert!(parse_duration(&spaced).is_err());
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_duration(&s);
        }
    }
}
