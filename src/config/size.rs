//! The one size syntax forkyard accepts: `512B`, `32KiB`, `100MiB`, `1GiB`.
//!
//! Like durations, sizes are strict: a whole number followed by a unit, no
//! whitespace, no bare numbers. `KB`/`MB`/`GB` are powers of 1000, `KiB`/`MiB`/`GiB`
//! powers of 1024.
//!
//! Hand-written because no crate parses exactly this: `bytesize` 2, `byte-unit` 5
//! and `parse-size` 1 all accept bare numbers (`"32"`), decimals (`"1.5MiB"`),
//! `"32K"` and a space before the unit (`"32 KiB"`); `bytesize` and `parse-size` also
//! ignore case (`"32kib"`), and case-sensitive `byte-unit` reads `"32kib"` as
//! kibibits (4096 bytes). `humansize` only formats.

/// The hint every size error ends with.
pub(super) const SIZE_HINT: &str =
    r#"expected e.g. "32KiB", "100MiB", "1GiB" or "512B"; bare numbers are not sizes"#;

/// Parse a size such as `"32KiB"` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?} ({SIZE_HINT})");
    // Zero is zero in every unit: `buffer: { response: 0 }` turns buffering off.
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(invalid());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} is too large"))?;
    let factor: u64 = match unit {
        "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(invalid()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Render a byte count the way it would be written in the file.
pub(super) fn show_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "32", "KiB", "32 KiB", "32kib", "1.5MiB", "-1B"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(show_size(32 * 1024), "32KiB");
        assert_eq!(show_size(1000), "1000B");
    }
}
