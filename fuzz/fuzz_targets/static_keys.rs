//! The static API key file parser: never a panic; an error names a line of the file; a parsed
//! set holds one key per entry line, and a token is found only through its own hash. A second
//! mode writes a file from fuzzed ids and tokens and checks that each token finds its id.
#![no_main]

use berth_apiserver::auth::static_keys::{KeySet, ParseError, hash_token};
use libfuzzer_sys::fuzz_target;

fn error_line(e: &ParseError) -> usize {
    match *e {
        ParseError::Syntax { line }
        | ParseError::EmptyId { line }
        | ParseError::SlashInId { line }
        | ParseError::BadHash { line } => line,
        ParseError::DuplicateHash { line, first } => {
            assert!(first < line);
            line
        }
    }
}

fn raw_text(text: &str) {
    let lines = text.lines().count();
    match KeySet::parse(text) {
        Ok(set) => {
            let entries = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count();
            assert_eq!(set.len(), entries);
            // Any line's id part, used as a token, is found only if its hash is in the file.
            for l in text.lines() {
                if let Some(id) = set.lookup(l) {
                    assert!(text.contains(&hash_token(l)), "{l:?} -> {id:?}");
                }
            }
        }
        Err(e) => {
            let line = error_line(&e);
            assert!(line >= 1 && line <= lines, "{e} (of {lines} lines)");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }
}

/// `data` as `id\ttoken\n` records: the file of their hashes must map each token to its id.
fn generated(data: &str) {
    let mut file = String::new();
    let mut pairs = Vec::new();
    for rec in data.lines() {
        let Some((id, token)) = rec.split_once('\t') else {
            file.push_str("# ");
            file.push_str(rec);
            file.push('\n');
            continue;
        };
        let id = id.trim();
        if id.is_empty() || id.contains('/') || id.contains(':') || id.starts_with('#') {
            continue;
        }
        if pairs.iter().any(|(_, t)| *t == token) {
            continue;
        }
        file.push_str(&format!("  {id} :\t{} \r\n", hash_token(token)));
        pairs.push((id, token));
    }
    let set = KeySet::parse(&file).unwrap_or_else(|e| panic!("{e}\n{file}"));
    assert_eq!(set.len(), pairs.len());
    for (id, token) in pairs {
        assert_eq!(set.lookup(token), Some(id));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode % 2 == 0 {
        raw_text(&text);
    } else {
        generated(&text);
    }
});
