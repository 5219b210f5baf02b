//! Wall-clock reads for status timestamps. Deadlines never use these: they live on the
//! monotonic clock (`std::time::Instant`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats a time like `metav1.Time`: RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// The current wall-clock time as [`rfc3339`].
#[allow(clippy::disallowed_methods)] // the one wall-clock read of the operator: status stamps
pub fn wall_now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// The current wall-clock time as a `metav1.MicroTime` string (microseconds).
#[allow(clippy::disallowed_methods)] // lease renewTime stamps; expiry is judged on Instant
pub fn wall_now_micro() -> String {
    let t = OffsetDateTime::now_utc();
    let micros = t.microsecond();
    let base = t.replace_nanosecond(0).unwrap_or(t);
    let s = base.format(&Rfc3339).unwrap_or_default();
    // "…:SSZ" → "…:SS.ffffffZ"
    format!("{}.{micros:06}Z", s.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_metav1_time() {
        let t = time::macros::datetime!(2026-05-30 12:34:56.789 +02:00);
        assert_eq!(rfc3339(t), "2026-05-30T10:34:56Z");
        assert!(wall_now_rfc3339().ends_with('Z'));
    }
}
