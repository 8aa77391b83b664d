//! Value parsers for settings: sizes (`256KiB`), durations (`500ms`),
//! hours, booleans and the enum-valued settings; each ignores surrounding
//! whitespace (names, addresses, paths and secrets are taken exactly as
//! given, by `super::validate`). Pure functions over `&str`
//! that return a message saying what is allowed; the caller names the
//! setting (see `super::validate`). The CLI clients reuse the size and
//! duration parsers.

use std::time::Duration;

use super::sections::{AppendMode, RetentionMode};

/// Parses `none|acked`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_retention_mode(s: &str) -> Result<RetentionMode, String> {
    match s.trim() {
        "none" => Ok(RetentionMode::None),
        "acked" => Ok(RetentionMode::Acked),
        _ => Err("expected none or acked".into()),
    }
}

/// Parses a comma-separated list of host names or addresses without ports
/// (`allowed_hosts`) into lower case, IPv6 addresses without brackets, no
/// trailing dots.
///
/// # Errors
/// A message naming the first invalid entry and saying what is allowed.
pub fn parse_host_list(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let bare = e
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or(e);
            if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
                return Ok(ip.to_string());
            }
            let name = e.strip_suffix('.').unwrap_or(e).to_ascii_lowercase();
            let ok = name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            if ok {
                Ok(name)
            } else {
                Err(format!(
                    "{e:?} is not a host name or address (give names like broker.internal, without port)"
                ))
            }
        })
        .collect()
}

/// Parses a positive number of hours (`24`, `0.5`).
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_hours(s: &str) -> Result<Duration, String> {
    let h: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of hours, e.g. 24 or 0.5".to_owned())?;
    if !(h > 0.0 && h <= 1e6) {
        return Err("must be more than 0 and at most 1000000 hours".into());
    }
    Ok(Duration::from_secs_f64(h * 3600.0))
}

/// Parses `4194304`, `256KiB`, `1MiB`, `2GiB` into bytes.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let why =
        || "expected bytes or a number with KiB, MiB or GiB, e.g. 4194304 or 256KiB".to_string();
    let (num, mult) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1u64 << 10)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("GiB") {
        (n, 1 << 30)
    } else {
        (s, 1)
    };
    let n = parse_digits(num.trim()).ok_or_else(why)?;
    n.checked_mul(mult).ok_or_else(why)
}

/// Parses `500ms`, `1s`, `10m`, `2h`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let why = || "expected a number with ms, s, m or h, e.g. 500ms, 1s, 10m".to_string();
    let (num, ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        return Err(why());
    };
    let n = parse_digits(num.trim()).ok_or_else(why)?;
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(why)
}

/// Parses `write|mmap`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_append_mode(s: &str) -> Result<AppendMode, String> {
    match s.trim() {
        "write" => Ok(AppendMode::Write),
        "mmap" => Ok(AppendMode::Mmap),
        _ => Err("expected write or mmap".into()),
    }
}

/// Parses `true|false|1|0`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".into()),
    }
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_are_normalized_and_ports_refused() {
        assert_eq!(
            parse_host_list(" Broker.Internal., [fd00::1], 10.0.0.1 ,").unwrap(),
            vec!["broker.internal", "fd00::1", "10.0.0.1"]
        );
        for bad in ["broker:8080", "a b", "http://x", "a..b"] {
            assert!(
                parse_host_list(bad).unwrap_err().contains("without port"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4194304"), Ok(4_194_304));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "-1", "1KB", "1.5MiB", "MiB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "5", "1d", "s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
