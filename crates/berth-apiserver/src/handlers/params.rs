//! Path parameters as the OpenAPI document describes them: the same rules
//! [`berth_core::LeaseKey::new`] enforces, as far as JSON Schema can say them (the joined
//! `namespace.name` limit of 253 characters is stated in words only).

/// `{ns}`: a lease namespace.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamespacePath {
    /// Lease namespace: a DNS-1123 label (lowercase alphanumerics or '-', alphanumeric at both
    /// ends, at most 63 characters).
    #[param(
        pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        min_length = 1,
        max_length = 63
    )]
    pub ns: String,
}

/// `{ns}/leases/{name}`: one lease.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LeasePath {
    /// Lease namespace: a DNS-1123 label (lowercase alphanumerics or '-', alphanumeric at both
    /// ends, at most 63 characters).
    #[param(
        pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        min_length = 1,
        max_length = 63
    )]
    pub ns: String,
    /// Lease name: a DNS-1123 subdomain (dot-separated DNS-1123 labels, at most 253
    /// characters); namespace and name together at most 253 characters.
    #[param(
        pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$",
        min_length = 1,
        max_length = 253
    )]
    pub name: String,
}
