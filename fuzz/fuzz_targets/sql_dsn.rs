//! SQL DSN parsing and redaction: never a panic for any driver; a DSN built around a known
//! password (URL forms and the Go MySQL form `user:pass@tcp(host:port)/db?parseTime=true`)
//! never shows that password in its redacted form, in `Debug`, or in a validation error.
#![no_main]

use berth_store_sql::{Migrate, SqlDriver, SqlStoreConfig, redact_dsn};
use libfuzzer_sys::fuzz_target;

const DRIVERS: [SqlDriver; 3] = [SqlDriver::Postgres, SqlDriver::Mysql, SqlDriver::Sqlite];

/// Percent-encodes everything but unreserved characters, as a URL's userinfo needs.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn leaks(text: &str, password: &str) -> bool {
    text.contains(password) || text.contains(&pct(password))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let driver = DRIVERS[usize::from(sel % 3)];

    // Any text: validation and redaction never panic.
    let cfg = SqlStoreConfig::new(driver, text.as_ref(), Migrate::Auto);
    let _ = cfg.validate();
    let _ = redact_dsn(&text);
    let _ = format!("{cfg:?}");

    // Fields separated by NUL: user, password, host, db, params.
    let mut parts = text.split('\0');
    let (Some(user), Some(password)) = (parts.next(), parts.next()) else {
        return;
    };
    let host = parts.next().unwrap_or("db");
    let db = parts.next().unwrap_or("berth");
    let params = parts.next().unwrap_or("");
    // A password too short to tell apart from the DSN's other text is skipped, and so are
    // fields that would move the password elsewhere (into a fragment, the path or the host)
    // or that URL parsing rewrites (it drops tabs and newlines): then what the parser takes
    // for the password, or the text around it, is not what was planted.
    if password.len() < 4
        || [host, db, params]
            .iter()
            .any(|f| f.contains(['#', '?', '/', '@', '\t', '\n', '\r']))
        || user.contains([':', '@', '/', '#', '?'])
    {
        return;
    }
    let (p, u) = (pct(password), pct(user));
    let (driver, dsn, slot) = match (sel / 3) % 4 {
        0 => (
            SqlDriver::Postgres,
            format!("postgres://{u}:{p}@{host}/{db}?{params}"),
            &p,
        ),
        1 => (
            SqlDriver::Mysql,
            format!("mysql://{u}:{p}@{host}/{db}?{params}"),
            &p,
        ),
        2 => (
            SqlDriver::Postgres,
            format!("postgres://{host}/{db}?user={u}&password={p}"),
            &p,
        ),
        _ => (
            SqlDriver::Mysql,
            format!("{user}:{password}@tcp({host})/{db}?parseTime=true&{params}"),
            &password.to_owned(),
        ),
    };
    // The password must appear only where it was put.
    let Some(at) = dsn
        .find(&format!(":{slot}@"))
        .map(|i| i + 1)
        .or_else(|| dsn.find(&format!("password={slot}")).map(|i| i + 9))
    else {
        return;
    };
    let without = format!("{}{}", &dsn[..at], &dsn[at + slot.len()..]);
    if leaks(&without, password) {
        return;
    }
    // The same DSN with a stand-in password of the same length: whatever text the outputs
    // carry anyway (the redaction marker `***`, `Postgres` in `Debug`, ...) shows up in both,
    // so only an occurrence more than the stand-in's output has is a leak.
    let Some(fill) = ['x', 'y', 'z', 'q'].into_iter().find(|c| !password.contains(*c)) else {
        return;
    };
    let stand_in: String = std::iter::repeat_n(fill, password.chars().count()).collect();
    let stand_in_slot = if slot.as_str() == password { stand_in.clone() } else { pct(&stand_in) };
    let other = format!("{}{}{}", &dsn[..at], stand_in_slot, &dsn[at + slot.len()..]);
    let outputs = |dsn: &str| {
        let cfg = SqlStoreConfig::new(driver, dsn.to_owned(), Migrate::Auto);
        let parsed = cfg.validate().map_err(|e| e.to_string());
        (parsed, cfg.redacted_dsn(), format!("{cfg:?}"))
    };
    let (parsed, redacted, dbg) = outputs(&dsn);
    let (other_parsed, other_redacted, other_dbg) = outputs(&other);
    assert!(
        count(&redacted, password) <= count(&other_redacted, password),
        "{dsn:?} redacted as {redacted:?}"
    );
    assert!(
        count(&dbg, password) <= count(&other_dbg, password),
        "{dsn:?} debug {dbg:?}"
    );
    if let Err(e) = parsed {
        let other_e = other_parsed.err().unwrap_or_default();
        assert!(
            count(&e, password) <= count(&other_e, password),
            "{dsn:?} error {e:?}"
        );
    }
});

/// Occurrences of `password` in `text`, plain or percent-encoded.
fn count(text: &str, password: &str) -> usize {
    let encoded = pct(password);
    let mut n = text.matches(password).count();
    if encoded != password {
        n += text.matches(encoded.as_str()).count();
    }
    n
}
