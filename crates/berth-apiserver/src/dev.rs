//! `--dev`: a local CA and serving certificate in `--dev-dir`, and the CLI's `config.json`.
//!
//! The CA is reused when `ca.crt` and `ca.key` already exist, so clients configured against
//! it stay valid across restarts; the serving certificate is issued anew on every start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// File names written into the dev directory.
pub const CA_CERT: &str = "ca.crt";
/// CA private key.
pub const CA_KEY: &str = "ca.key";
/// Serving certificate.
pub const TLS_CERT: &str = "tls.crt";
/// Serving key.
pub const TLS_KEY: &str = "tls.key";
/// CLI configuration.
pub const CONFIG: &str = "config.json";

/// Paths of the dev material.
#[derive(Debug, Clone)]
pub struct DevFiles {
    /// Absolute dev directory.
    pub dir: PathBuf,
    /// CA certificate.
    pub ca_cert: PathBuf,
    /// Serving certificate.
    pub tls_cert: PathBuf,
    /// Serving key.
    pub tls_key: PathBuf,
    /// CLI configuration.
    pub config: PathBuf,
}

// The CA's subject is fixed, so an issuer rebuilt from these parameters and the stored key
// signs certificates that chain to the stored `ca.crt`.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "berth dev CA");
    dn.push(DnType::OrganizationName, "berth");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Creates `dir` if needed, reuses or creates the CA, and issues a serving certificate for
/// `localhost`, `127.0.0.1` and `::1`.
///
/// # Errors
/// File system errors, or an unreadable existing CA key.
pub fn prepare(dir: &Path) -> anyhow::Result<DevFiles> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create --dev-dir {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("failed to resolve --dev-dir {}", dir.display()))?;
    let ca_cert = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    let ca_key = if ca_cert.exists() && ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .with_context(|| format!("failed to read {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem)
            .with_context(|| format!("invalid CA key {}", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate().context("failed to generate the CA key")?;
        let cert = ca_params()
            .self_signed(&key)
            .context("failed to create the CA certificate")?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert, cert.pem())
            .with_context(|| format!("failed to write {}", ca_cert.display()))?;
        key
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .context("invalid serving certificate names")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "berth-apiserver (dev)");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().context("failed to generate the serving key")?;
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .context("failed to sign the serving certificate")?;
    let tls_cert = dir.join(TLS_CERT);
    let tls_key = dir.join(TLS_KEY);
    write_private(&tls_key, &leaf_key.serialize_pem())?;
    std::fs::write(&tls_cert, leaf.pem())
        .with_context(|| format!("failed to write {}", tls_cert.display()))?;
    Ok(DevFiles {
        config: dir.join(CONFIG),
        dir,
        ca_cert,
        tls_cert,
        tls_key,
    })
}

impl DevFiles {
    /// Writes `config.json` for the CLI, pointing at the bound port on 127.0.0.1.
    ///
    /// # Errors
    /// File system errors.
    pub fn write_config(&self, addr: SocketAddr) -> anyhow::Result<()> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct CliConfig {
            server: String,
            ca_file: String,
        }
        let config = CliConfig {
            server: format!("https://127.0.0.1:{}", addr.port()),
            ca_file: self.ca_cert.display().to_string(),
        };
        let text = serde_json::to_string_pretty(&config).context("failed to encode config.json")?;
        std::fs::write(&self.config, text + "\n")
            .with_context(|| format!("failed to write {}", self.config.display()))
    }

    /// The two-line "try it" hint.
    pub fn hint(&self) -> String {
        format!(
            "try it: export BERTH_CONFIG={}\n        berth lease acquire demo/hello --holder me --ttl 30s",
            self.config.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_reused_and_leaf_is_valid() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/dev");
        let first = prepare(&dir).unwrap();
        let ca1 = std::fs::read_to_string(&first.ca_cert).unwrap();
        let leaf1 = std::fs::read_to_string(&first.tls_cert).unwrap();
        let second = prepare(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(&second.ca_cert).unwrap(), ca1);
        assert_ne!(std::fs::read_to_string(&second.tls_cert).unwrap(), leaf1);
        // Both serving certificates chain to the one CA.
        crate::tls::load_server_config(&second.tls_cert, &second.tls_key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        second
            .write_config("127.0.0.1:9443".parse().unwrap())
            .unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&second.config).unwrap()).unwrap();
        assert_eq!(
            cfg,
            serde_json::json!({
                "server": "https://127.0.0.1:9443",
                "caFile": second.ca_cert.display().to_string(),
            })
        );
        assert!(second.ca_cert.is_absolute());
    }
}
