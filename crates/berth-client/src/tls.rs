//! The rustls configuration: system roots plus extra CA bundles, ring as the crypto provider,
//! and an optional server-name override for certificate verification.

use std::{fmt, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

use crate::ClientError;

/// Builds the client TLS configuration.
///
/// Roots are the platform's native certificates (or the bundled Mozilla roots when none can be
/// loaded) plus every certificate of every bundle in `extra_ca_pems`.
pub(crate) fn client_config(
    extra_ca_pems: &[(String, Vec<u8>)],
    server_name: Option<&str>,
) -> Result<ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = system_roots();
    for (origin, pem) in extra_ca_pems {
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| ClientError::config(format!("invalid CA bundle {origin}: {e}")))?;
            roots.add(cert).map_err(|e| {
                ClientError::config(format!("invalid CA certificate in {origin}: {e}"))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::config(format!(
                "CA bundle {origin} holds no PEM certificate"
            )));
        }
    }

    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ClientError::config(format!("failed to build the TLS verifier: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match server_name {
        Some(name) => Arc::new(OverrideNameVerifier::new(webpki, name)?),
        None => webpki,
    };

    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::config(format!("failed to configure TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // reqwest leaves ALPN alone for a preconfigured rustls config.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::debug!(
            errors = native.errors.len(),
            "no native root certificates loaded; using the bundled webpki roots"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// Verifies the server's certificate chain against a fixed name instead of the URL's host, like
/// Go's `tls.Config.ServerName` (reference §2.7). Everything else is WebPKI verification.
struct OverrideNameVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl OverrideNameVerifier {
    fn new(inner: Arc<WebPkiServerVerifier>, name: &str) -> Result<Self, ClientError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| ClientError::config(format!("invalid TLS server name {name:?}: {e}")))?;
        Ok(Self { inner, name })
    }
}

impl fmt::Debug for OverrideNameVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverrideNameVerifier")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for OverrideNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Installs ring as the process-wide rustls provider if none is installed yet. Binaries call
/// this first; the client itself never depends on the process default.
pub fn install_default_crypto_provider() {
    // An Err only means another provider was installed first, which is fine.
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_without_certificates_is_a_config_error() {
        let err = client_config(&[("x.pem".into(), b"not pem".to_vec())], None).unwrap_err();
        assert_eq!(err.to_string(), "CA bundle x.pem holds no PEM certificate");
    }

    #[test]
    fn invalid_server_name_is_rejected() {
        let err = client_config(&[], Some("not a name!")).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid TLS server name"),
            "{err}"
        );
    }

    #[test]
    fn valid_bundle_and_name_build() {
        let ca = rcgen::generate_simple_self_signed(vec!["berth.internal".into()]).unwrap();
        let pem = ca.cert.pem();
        let config = client_config(
            &[("ca.pem".into(), pem.into_bytes())],
            Some("berth.internal"),
        )
        .unwrap();
        assert_eq!(config.alpn_protocols[0], b"h2");
    }
}
