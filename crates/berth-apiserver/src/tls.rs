//! TLS: rustls with the ring provider, certificate and key reloaded when the files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// How often the reloader looks at the files by default.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Builds a rustls server configuration (ring provider, TLS 1.2+, ALPN h2 and http/1.1) from
/// PEM files.
///
/// # Errors
/// Unreadable or invalid files, or a key that does not match the certificate.
pub fn load_server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("failed to read --tls-cert-file {}", cert.display()))?;
    let key_pem = std::fs::read(key)
        .with_context(|| format!("failed to read --tls-key-file {}", key.display()))?;
    server_config_from_pem(&cert_pem, &key_pem)
}

/// Builds a server configuration from PEM bytes.
///
/// # Errors
/// Invalid PEM, no certificate, no key, or a key that does not match the certificate.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("invalid certificate PEM")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate found in the certificate file"
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("invalid private key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .context("certificate and key rejected")?;
    // Refuse a key that does not belong to the certificate (a half-rotated pair).
    let signing = provider
        .key_provider
        .load_private_key(key)
        .context("unsupported private key")?;
    rustls::sign::CertifiedKey::new(certs, signing)
        .keys_match()
        .context("private key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn fingerprint(cert: &Path, key: &Path) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(std::fs::read(cert).ok()?);
    h.update([0u8]);
    h.update(std::fs::read(key).ok()?);
    Some(h.finalize().into())
}

/// Certificate files and the live configuration they feed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain PEM.
    pub cert: PathBuf,
    /// Private key PEM.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Loads the pair into a [`RustlsConfig`].
    ///
    /// # Errors
    /// See [`load_server_config`].
    pub fn load(&self) -> anyhow::Result<RustlsConfig> {
        Ok(RustlsConfig::from_config(load_server_config(
            &self.cert, &self.key,
        )?))
    }

    /// Polls the files every `poll` until `shutdown` turns true; a changed, valid pair replaces
    /// the live configuration, a bad one is logged and the old one kept.
    pub fn spawn_reloader(
        self,
        config: RustlsConfig,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen = fingerprint(&self.cert, &self.key);
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                let now = fingerprint(&self.cert, &self.key);
                if now.is_none() || now == seen {
                    continue;
                }
                seen = now;
                match load_server_config(&self.cert, &self.key) {
                    Ok(c) => {
                        config.reload_from_config(c);
                        tracing::info!(cert = %self.cert.display(), "tls certificate reloaded");
                    }
                    Err(e) => tracing::error!(
                        cert = %self.cert.display(),
                        error = format!("{e:#}"),
                        "tls certificate reload failed; keeping the previous certificate"
                    ),
                }
            }
        })
    }
}
