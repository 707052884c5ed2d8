//! The few Go standard-library behaviours that BuildKit's Dockerfile frontend leans on and that
//! Rust spells differently: `strconv.Quote`, `unicode.IsSpace` over single bytes, simple case
//! mapping, `strconv.ParseBool`/`ParseUint`/`ParseInt`, `time.ParseDuration`, go-units'
//! `RAMInBytes`, and BuildKit's "did you mean" suggestions.
//!
//! Each function states the Go function it reproduces. They are written from the Go
//! documentation and behaviour, so that kiln accepts and rejects exactly what `docker build`
//! does and prints the same dump.

use std::fmt::Write as _;

use unicode_general_category::{get_general_category, GeneralCategory};

/// Go's `strconv.Quote`: a double-quoted string literal with Go escapes.
///
/// `"` and `\` are escaped; printable runes (Go's `strconv.IsPrint`: letters, marks, numbers,
/// punctuation, symbols and the ASCII space) are kept; `\a \b \f \n \r \t \v` use their short
/// forms; other bytes below 0x20 and 0x7F become `\xNN`; other runes become `\uNNNN` or
/// `\UNNNNNNNN`. Rust's `{:?}` differs (`\0`, `\u{a0}`), hence this function.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_print(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`.
fn is_go_print(c: char) -> bool {
    let u = c as u32;
    if u <= 0xff {
        return (0x20..=0x7e).contains(&u) || ((0xa1..=0xff).contains(&u) && u != 0xad);
    }
    use GeneralCategory as G;
    !matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
    )
}

/// Go's `unicode.IsSpace(rune(b))` for one byte, as BuildKit applies it to single bytes of a
/// line when splitting off flags and the HEALTHCHECK type (so 0x85 and 0xA0 count as space).
pub(crate) fn is_go_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// Go's `unicode.IsLetter`.
pub(crate) fn is_go_letter(c: char) -> bool {
    use GeneralCategory as G;
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
    )
}

/// Go's `unicode.IsDigit`.
pub(crate) fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit()
        || (!c.is_ascii() && get_general_category(c) == GeneralCategory::DecimalNumber)
}

/// Go's `strings.ToLower`: simple (one rune to one rune) lower-case mapping.
pub(crate) fn go_lower(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\u{130}' {
                return 'i';
            }
            let mut it = c.to_lowercase();
            match (it.next(), it.next()) {
                (Some(l), None) => l,
                _ => c,
            }
        })
        .collect()
}

/// Go's `strings.ToUpper`, close enough for the ASCII keywords it is compared with: runes
/// whose full upper-case form is several runes (`ß`) stay as they are.
pub(crate) fn go_upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut it = c.to_uppercase();
            match (it.next(), it.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why a Go integer parse failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumError {
    /// Not a number in that base.
    Syntax,
    /// A number, but outside the type's range.
    Range,
}

/// Go's `strconv.ParseUint(s, base, bits)` for an explicit base (no prefixes, no `_`).
pub(crate) fn parse_uint(s: &str, base: u32, bits: u32) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Syntax);
    }
    let max: u64 = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut n: u64 = 0;
    for c in s.chars() {
        let d = c.to_digit(36).ok_or(NumError::Syntax)?;
        if d >= base {
            return Err(NumError::Syntax);
        }
        n = n
            .checked_mul(u64::from(base))
            .and_then(|n| n.checked_add(u64::from(d)))
            .filter(|&n| n <= max)
            .ok_or(NumError::Range)?;
    }
    Ok(n)
}

/// Go's `strconv.ParseInt(s, 10, 32)`.
pub(crate) fn parse_int32(s: &str) -> Result<i64, NumError> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let un = parse_uint(digits, 10, 64)?;
    let cutoff = 1u64 << 31;
    if (!neg && un >= cutoff) || (neg && un > cutoff) {
        return Err(NumError::Range);
    }
    let v = un as i64;
    Ok(if neg { -v } else { v })
}

/// A `time.ParseDuration` failure, with Go's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all, or out of range.
    #[error("time: invalid duration {}", go_quote(.0))]
    Invalid(String),
    /// A number without a unit (`30`).
    #[error("time: missing unit in duration {}", go_quote(.0))]
    MissingUnit(String),
    /// A unit Go does not know (`30x`).
    #[error("time: unknown unit {} in duration {}", go_quote(.unit), go_quote(.input))]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole duration as written.
        input: String,
    },
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with the
/// units ns, us, µs, μs, ms, s, m, h (`1m30s`, `1.5h`, `-2s`, `0`).
pub(crate) fn parse_duration(input: &str) -> Result<i64, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let mut s = input.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut d: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Consume [0-9]*.
        let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &c in &s[..digits] {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(c - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
        }
        let pre = digits > 0;
        s = &s[digits..];
        // Consume (\.[0-9]*)?.
        let mut post = false;
        let mut f: u64 = 0;
        let mut scale = 1.0f64;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut overflow = false;
            for &c in &s[..digits] {
                if overflow {
                    continue;
                }
                if f > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(c - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            post = digits > 0;
            s = &s[digits..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        // Consume the unit.
        let ulen = s
            .iter()
            .take_while(|&&c| c != b'.' && !c.is_ascii_digit())
            .count();
        if ulen == 0 {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let unit_bytes = &s[..ulen];
        s = &s[ulen..];
        let unit: u64 = match unit_bytes {
            b"ns" => 1,
            // "us", "µs" (U+00B5) and "μs" (U+03BC).
            b"us" | [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: String::from_utf8_lossy(unit_bytes).into_owned(),
                    input: input.to_string(),
                })
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // As Go: float64 keeps fractions of hours nanosecond-accurate.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d += v;
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((d as i128).wrapping_neg() as i64);
    }
    if d > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(d as i64)
}

/// go-units' `RAMInBytes` (binary multiples: `64m` = 64 MiB, `1g`, `512KiB`, `100`).
/// `None` when the size is malformed or negative.
pub(crate) fn ram_in_bytes(s: &str) -> Option<i64> {
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (num, sfx) = if s.as_bytes()[sep] != b' ' {
        (&s[..=sep], &s[sep + 1..])
    } else {
        (&s[..sep], &s[sep + 1..])
    };
    let size = parse_go_float(num)?;
    if size < 0.0 {
        return None;
    }
    if sfx.is_empty() {
        return Some(size as i64);
    }
    if sfx.len() > 3 {
        return None;
    }
    let sfx = go_lower(sfx);
    let b = sfx.as_bytes();
    if b[0] == b'b' {
        return (b.len() == 1).then_some(size as i64);
    }
    let mul: f64 = match b[0] {
        b'k' => 1024.0,
        b'm' => 1024.0 * 1024.0,
        b'g' => 1024.0 * 1024.0 * 1024.0,
        b't' => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        b'p' => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    match b.len() {
        2 if b[1] != b'b' => return None,
        3 if &b[1..] != b"ib" => return None,
        _ => {}
    }
    Some((size * mul) as i64)
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal input: `None` on a syntax error or overflow.
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    // Rust also accepts "inf"/"nan" spellings Go spells differently; decimal digits only here.
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || b"eE.+-".contains(&b))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// BuildKit's `suggest.Search`: the option within edit distance 2 of `val`, if one is; `None`
/// when `val` equals an option (the error was about something else) or nothing is close.
/// Case-insensitive matching returns the option in `val`'s case when `val` is all lower or
/// all upper case.
pub(crate) fn suggest(val: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let folded = if case_sensitive {
        val.to_string()
    } else {
        go_lower(val)
    };
    let mut best: Option<String> = None;
    let mut mindist = 3usize;
    for opt in options {
        let opt = if case_sensitive {
            (*opt).to_string()
        } else {
            go_lower(opt)
        };
        if folded == opt {
            return None;
        }
        let dist = levenshtein(&folded, &opt, mindist);
        if dist < mindist {
            best = Some(if case_sensitive {
                opt
            } else if val == go_lower(val) {
                go_lower(&opt)
            } else if val == go_upper(val) {
                go_upper(&opt)
            } else {
                opt
            });
            mindist = dist;
        }
    }
    best
}

/// Edit distance between `a` and `b` in runes; any answer `>= limit` is reported as `limit`
/// (long hostile inputs cost nothing: they differ in length by more than the limit).
fn levenshtein(a: &str, b: &str, limit: usize) -> usize {
    let a: Vec<char> = a.chars().take(b.chars().count() + limit).collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) >= limit {
        return limit;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\x00\x07\x7f\t"), r#""\x00\a\x7f\t""#);
        assert_eq!(go_quote("é♥☃"), "\"é♥☃\"");
        assert_eq!(go_quote("\u{a0}\u{ad}\u{200b}"), r#""\u00a0\u00ad\u200b""#);
        assert_eq!(go_quote("\u{e0001}"), r#""\U000e0001""#);
        assert_eq!(go_quote("\u{fffd}"), "\"\u{fffd}\"");
    }

    #[test]
    fn durations_match_go() {
        assert_eq!(parse_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("-2ms"), Ok(-2_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("10µs"), Ok(10_000));
        assert_eq!(parse_duration(".5s"), Ok(500_000_000));
        assert_eq!(
            parse_duration("30").unwrap_err().to_string(),
            r#"time: missing unit in duration "30""#
        );
        assert_eq!(
            parse_duration("3x").unwrap_err().to_string(),
            r#"time: unknown unit "x" in duration "3x""#
        );
        assert!(matches!(parse_duration(""), Err(DurationError::Invalid(_))));
        assert!(matches!(
            parse_duration(".s"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("9999999999999h"),
            Err(DurationError::Invalid(_))
        ));
    }

    #[test]
    fn integers_match_go() {
        assert_eq!(parse_uint("755", 8, 32), Ok(0o755));
        assert_eq!(parse_uint("8", 8, 32), Err(NumError::Syntax));
        assert_eq!(parse_uint("4294967296", 10, 32), Err(NumError::Range));
        assert_eq!(parse_uint("", 10, 32), Err(NumError::Syntax));
        assert_eq!(parse_int32("-3"), Ok(-3));
        assert_eq!(parse_int32("2147483648"), Err(NumError::Range));
        assert_eq!(parse_int32("-2147483648"), Ok(-2_147_483_648));
        assert_eq!(parse_int32("1x"), Err(NumError::Syntax));
    }

    #[test]
    fn sizes_match_go_units() {
        assert_eq!(ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1GiB"), Some(1 << 30));
        assert_eq!(ram_in_bytes("1.5k"), Some(1536));
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(ram_in_bytes("10 MB"), Some(10 << 20));
        assert_eq!(ram_in_bytes("10b"), Some(10));
        assert_eq!(ram_in_bytes("10x"), None);
        assert_eq!(ram_in_bytes("10kbb"), None);
        assert_eq!(ram_in_bytes("m"), None);
        assert_eq!(ram_in_bytes("-1"), None);
    }

    #[test]
    fn suggestions_match_buildkit() {
        let names = ["ADD", "COPY", "RUN", "FROM"];
        assert_eq!(suggest("RUNN", &names, false).as_deref(), Some("RUN"));
        assert_eq!(suggest("runn", &names, false).as_deref(), Some("run"));
        assert_eq!(suggest("Runn", &names, false).as_deref(), Some("run"));
        assert_eq!(suggest("XYZZY", &names, false), None);
        assert_eq!(suggest("RUN", &names, false), None);
        assert_eq!(
            suggest("chwon", &["chown", "chmod"], true).as_deref(),
            Some("chown")
        );
        assert_eq!(levenshtein(&"a".repeat(100_000), "run", 3), 3);
    }

    #[test]
    fn case_mapping_is_simple() {
        assert_eq!(go_lower("RUN"), "run");
        assert_eq!(go_lower("\u{130}"), "i");
        assert_eq!(go_lower("WOR\u{212a}DIR"), "workdir");
        assert_eq!(go_upper("straße"), "STRAßE");
    }
}
