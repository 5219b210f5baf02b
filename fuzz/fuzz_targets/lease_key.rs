//! Lease key and holder validation: never a panic; what is accepted matches an independent
//! reading of the rules (DNS-1123 label / subdomain, joined length, holder bytes) and
//! round-trips through `Display` / `FromStr` and the list continue token.
#![no_main]

use berth_apiserver::handlers::lease::{decode_continue, encode_continue};
use berth_core::key::{MAX_HOLDER_LEN, MAX_KEY_LEN, MAX_NAMESPACE_LEN};
use berth_core::{Holder, LeaseKey};
use libfuzzer_sys::fuzz_target;

fn label_ok(s: &str, max: usize) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

fn key_ok(ns: &str, name: &str) -> bool {
    label_ok(ns, MAX_NAMESPACE_LEN)
        && name.len() <= MAX_KEY_LEN
        && name.split('.').all(|l| label_ok(l, MAX_NAMESPACE_LEN))
        && ns.len() + 1 + name.len() <= MAX_KEY_LEN
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The whole input as a joined key, as a continue token and as a holder.
    if let Ok(k) = text.parse::<LeaseKey>() {
        assert_eq!(k.to_string(), text);
    }
    if let Ok(k) = decode_continue(&text) {
        assert_eq!(
            decode_continue(&encode_continue(&k)).expect("round trip"),
            k
        );
    }
    match Holder::new(text.as_ref()) {
        Ok(h) => {
            assert!(!text.is_empty() && text.len() <= MAX_HOLDER_LEN);
            assert_eq!(h.as_str(), text);
        }
        Err(_) => assert!(text.is_empty() || text.len() > MAX_HOLDER_LEN),
    }
    assert_eq!(
        Holder::new_unbounded(text.as_ref()).is_ok(),
        !text.is_empty()
    );

    // The input split at its first NUL (or in the middle) as namespace and name.
    let (ns, name) = match text.split_once('\0') {
        Some(p) => p,
        None => text.split_at(
            text.char_indices()
                .nth(text.chars().count() / 2)
                .map_or(text.len(), |(i, _)| i),
        ),
    };
    let res = LeaseKey::new(ns, name);
    assert_eq!(res.is_ok(), key_ok(ns, name), "{ns:?} {name:?} {res:?}");
    if let Ok(k) = res {
        assert_eq!((k.namespace(), k.name()), (ns, name));
        let shown = k.to_string();
        assert_eq!(shown, format!("{ns}/{name}"));
        assert_eq!(shown.parse::<LeaseKey>().expect("display parses"), k);
        assert_eq!(decode_continue(&encode_continue(&k)).expect("token"), k);
    } else {
        assert!(format!("{ns}/{name}").parse::<LeaseKey>().is_err());
    }
});
