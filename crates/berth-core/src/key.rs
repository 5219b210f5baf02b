//! Validated identifiers: lease keys and holders.

use std::fmt;

/// Longest namespace (an RFC 1123 DNS label).
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest lease name, and longest `namespace.name` joined key.
pub const MAX_KEY_LEN: usize = 253;
/// Longest holder accepted by acquire and renew, in UTF-8 bytes.
pub const MAX_HOLDER_LEN: usize = 253;

/// Why a key or holder was rejected. The `Display` text is contract text sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The namespace is not an RFC 1123 DNS label.
    #[error(
        "namespace must be a DNS-1123 label: lowercase alphanumerics or '-', starting and ending with an alphanumeric, at most 63 characters, no dots"
    )]
    Namespace,
    /// The name is not an RFC 1123 DNS subdomain.
    #[error(
        "name must be a DNS-1123 subdomain: lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric, at most 253 characters"
    )]
    Name,
    /// `namespace.name` is longer than 253 characters.
    #[error("namespace and name together must be at most 253 characters")]
    TooLong,
    /// The holder is empty.
    #[error("holder is required")]
    HolderRequired,
    /// The holder is longer than 253 bytes.
    #[error("holder must be at most 253 bytes")]
    HolderTooLong,
    /// A joined key without the `/` between namespace and name.
    #[error("lease key must be <namespace>/<name>")]
    Format,
}

/// The identity of a lease: `(namespace, name)`.
///
/// # Guarantees
/// `namespace` is an RFC 1123 DNS label (no dots), `name` an RFC 1123 DNS subdomain, and
/// `namespace.len() + 1 + name.len() <= 253`, so `<namespace>.<name>` is injective.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    namespace: String,
    name: String,
}

impl LeaseKey {
    /// Validates and builds a key.
    ///
    /// # Errors
    /// [`KeyError::Namespace`], [`KeyError::Name`] or [`KeyError::TooLong`].
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Result<Self, KeyError> {
        let namespace = namespace.into();
        let name = name.into();
        if !is_dns_label(&namespace) {
            return Err(KeyError::Namespace);
        }
        if !is_dns_subdomain(&name) {
            return Err(KeyError::Name);
        }
        if namespace.len() + 1 + name.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        Ok(Self { namespace, name })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Parses the [`Display`](fmt::Display) form `<namespace>/<name>`: the inverse of `to_string`.
impl std::str::FromStr for LeaseKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s.split_once('/').ok_or(KeyError::Format)?;
        Self::new(namespace, name)
    }
}

/// An identity that may hold leases: non-empty, at most 253 UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holder(String);

impl Holder {
    /// Validates and builds a holder.
    ///
    /// # Errors
    /// [`KeyError::HolderRequired`] or [`KeyError::HolderTooLong`].
    pub fn new(holder: impl Into<String>) -> Result<Self, KeyError> {
        let holder = holder.into();
        if holder.is_empty() {
            return Err(KeyError::HolderRequired);
        }
        if holder.len() > MAX_HOLDER_LEN {
            return Err(KeyError::HolderTooLong);
        }
        Ok(Self(holder))
    }

    /// Builds a holder without the length limit: releases accept legacy oversized holders
    /// (reference §2.2). Still rejects the empty string.
    ///
    /// # Errors
    /// [`KeyError::HolderRequired`].
    pub fn new_unbounded(holder: impl Into<String>) -> Result<Self, KeyError> {
        let holder = holder.into();
        if holder.is_empty() {
            return Err(KeyError::HolderRequired);
        }
        Ok(Self(holder))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// RFC 1123 label: 1–63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAMESPACE_LEN
        && b.iter().all(|&c| is_alnum(c) || c == b'-')
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_KEY_LEN && !s.is_empty() && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_keys() {
        let k = LeaseKey::new("pipeline", "ingest-worker.v2").unwrap();
        assert_eq!(k.namespace(), "pipeline");
        assert_eq!(k.name(), "ingest-worker.v2");
        assert_eq!(k.to_string(), "pipeline/ingest-worker.v2");
        LeaseKey::new("a", "b").unwrap();
        LeaseKey::new("0", "9").unwrap();
    }

    #[test]
    fn rejects_bad_namespaces() {
        for ns in ["", "a.b", "-a", "a-", "A", "a_b", &"a".repeat(64), "ü"] {
            assert_eq!(LeaseKey::new(ns, "x"), Err(KeyError::Namespace), "{ns:?}");
        }
        LeaseKey::new("a".repeat(63), "x").unwrap();
    }

    #[test]
    fn rejects_bad_names() {
        for name in ["", ".a", "a.", "a..b", "A", "a/b", "a_b", &"a".repeat(254)] {
            assert_eq!(LeaseKey::new("ns", name), Err(KeyError::Name), "{name:?}");
        }
    }

    #[test]
    fn joined_length_is_bounded() {
        let name = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(name.len(), 253);
        assert_eq!(LeaseKey::new("n", &name), Err(KeyError::TooLong));
        let name = &name[..249];
        let name = name.trim_end_matches('.');
        LeaseKey::new("n", name).unwrap();
    }

    #[test]
    fn parses_its_display_form() {
        let k = LeaseKey::new("pipeline", "ingest-worker.v2").unwrap();
        assert_eq!(k.to_string().parse::<LeaseKey>().unwrap(), k);
        assert_eq!("pipeline".parse::<LeaseKey>(), Err(KeyError::Format));
        assert_eq!("a/b/c".parse::<LeaseKey>(), Err(KeyError::Name));
        assert_eq!("/b".parse::<LeaseKey>(), Err(KeyError::Namespace));
    }

    #[test]
    fn holder_limits() {
        assert_eq!(Holder::new(""), Err(KeyError::HolderRequired));
        Holder::new("x".repeat(253)).unwrap();
        assert_eq!(Holder::new("x".repeat(254)), Err(KeyError::HolderTooLong));
        // Multi-byte characters count in bytes.
        assert_eq!(Holder::new("é".repeat(127)), Err(KeyError::HolderTooLong));
        Holder::new_unbounded("x".repeat(1000)).unwrap();
        assert_eq!(Holder::new_unbounded(""), Err(KeyError::HolderRequired));
    }
}
