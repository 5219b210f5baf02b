//! A throw-away certificate authority and server certificate for the replicas of one run.

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and a `localhost`/`127.0.0.1` server certificate written to a temporary directory
/// (removed on drop).
pub struct Pki {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM) clients trust.
    pub ca_pem: String,
    /// `berth-apiserver` arguments: the certificate and key files and `--auth-mode none`.
    pub server_args: Vec<String>,
}

impl Pki {
    /// Generates the CA and the server certificate.
    ///
    /// # Errors
    ///
    /// Key generation, signing or writing the files failed.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir().context("tempdir for the PKI")?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "berth chaos CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, leaf_cert.pem()).context("write tls.crt")?;
        std::fs::write(&key, leaf_key.serialize_pem()).context("write tls.key")?;
        let server_args = vec![
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--auth-mode".into(),
            "none".into(),
            "--allow-unauthenticated".into(),
        ];
        Ok(Self {
            _dir: dir,
            ca_pem: ca_cert.pem(),
            server_args,
        })
    }

    /// A client of `base` that trusts this CA, with `timeout` as request and connect timeout.
    ///
    /// # Errors
    ///
    /// The client could not be built.
    pub fn client(&self, base: &str, timeout: std::time::Duration) -> Result<berth_client::Client> {
        berth_client::Client::builder(base.to_owned())
            .ca_pem(self.ca_pem.as_bytes().to_vec())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .context("build berth client")
    }
}
