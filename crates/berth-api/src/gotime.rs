//! Serde helpers for times in Go's `time.Time` JSON shape.
//!
//! Go marshals times as RFC 3339 with nanoseconds and trailing zeros trimmed, and its zero
//! value as `0001-01-01T00:00:00Z`; `omitempty` does not suppress it (reference §2.4). An
//! absent time (`None`) is written as that zero time and read back as `None`.

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Go's zero time as it appears on the wire.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats a time in UTC as Go's `RFC3339Nano` does.
pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

/// Parses an RFC 3339 time; Go's zero time parses to `None`.
///
/// # Errors
/// When the text is not RFC 3339.
pub fn parse(s: &str) -> Result<Option<OffsetDateTime>, time::error::Parse> {
    if s == GO_ZERO_TIME {
        return Ok(None);
    }
    OffsetDateTime::parse(s, &Rfc3339).map(Some)
}

/// Serializes `None` as Go's zero time.
///
/// # Errors
/// Never, beyond the serializer's own.
#[allow(clippy::ref_option)] // the signature serde's `with` requires
pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format(*t)),
        None => s.serialize_str(GO_ZERO_TIME),
    }
}

/// Deserializes Go's zero time (or JSON null) as `None`.
///
/// # Errors
/// When the value is not an RFC 3339 string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s {
        None => Ok(None),
        Some(s) => parse(&s).map_err(serde::de::Error::custom),
    }
}

/// Like the parent module, but for fields that are omitted when absent.
pub mod option {
    use super::{Deserializer, OffsetDateTime, Serializer};

    /// Serializes a present time; absent ones are skipped by `skip_serializing_if`.
    ///
    /// # Errors
    /// Never, beyond the serializer's own.
    #[allow(clippy::ref_option)] // the signature serde's `with` requires
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        super::serialize(t, s)
    }

    /// Deserializes an optional time.
    ///
    /// # Errors
    /// When the value is not an RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        super::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_like_go() {
        assert_eq!(
            format(datetime!(2026-11-21 17:00:00 UTC)),
            "2026-11-21T17:00:00Z"
        );
        assert_eq!(
            format(datetime!(2026-11-21 17:00:00.120 UTC)),
            "2026-11-21T17:00:00.12Z"
        );
        assert_eq!(
            format(datetime!(2026-11-21 19:00:00.000000001 +2)),
            "2026-11-21T17:00:00.000000001Z"
        );
    }

    #[test]
    fn parses_zero_time_as_none() {
        assert_eq!(parse(GO_ZERO_TIME).unwrap(), None);
        assert_eq!(
            parse("2026-11-21T17:00:00.12Z").unwrap(),
            Some(datetime!(2026-11-21 17:00:00.12 UTC))
        );
        assert!(parse("yesterday").is_err());
    }
}
