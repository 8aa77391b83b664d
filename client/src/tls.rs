//! TLS for `https://` servers: a rustls client configuration that trusts
//! the CA certificates the caller gives (PEM), and the connector built from
//! it. chunkbus servers in a cluster usually run with certificates of a
//! private CA, so there is no implicit trust in any system store: an
//! `https://` URL needs [`Client::with_ca_pem`](crate::Client::with_ca_pem)
//! (or the CLI's `--ca`).
//!
//! The crypto provider is aws-lc-rs, passed explicitly, so the process-wide
//! rustls default (ambiguous when several providers are compiled in) is
//! never consulted.

use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The connector of every [`Client`](crate::Client): plain `http://`, and
/// `https://` when trust roots were given.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// TLS set-up failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM held no certificate, or one that does not parse.
    #[error("CA certificates: {0}")]
    BadCa(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The rustls provider used by chunkbus everywhere.
///
/// ```
/// let p = chunkbus_client::tls::provider();
/// assert!(!p.cipher_suites.is_empty());
/// ```
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses every `CERTIFICATE` block of `pem` into a root store.
///
/// # Errors
/// [`TlsError::BadCa`] when `pem` holds no certificate or a broken one.
///
/// ```
/// assert!(chunkbus_client::tls::root_store(b"not a certificate").is_err());
/// ```
pub fn root_store(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::BadCa(
            "no CERTIFICATE block found in the PEM".to_owned(),
        ));
    }
    Ok(roots)
}

/// A client configuration trusting exactly the CA certificates in `pem`.
///
/// # Errors
/// As [`root_store`], or rustls refusing the protocol versions.
///
/// ```no_run
/// let pem = std::fs::read("ca.pem")?;
/// let config = chunkbus_client::tls::client_config(&pem)?;
/// # let _ = config;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn client_config(pem: &[u8]) -> Result<ClientConfig, TlsError> {
    config_with(root_store(pem)?)
}

/// A client configuration trusting nothing: `http://` works through its
/// connector, an `https://` handshake fails with an unknown issuer.
///
/// # Errors
/// rustls refusing the protocol versions (it does not for aws-lc-rs).
///
/// ```
/// let config = chunkbus_client::tls::untrusting_config()?;
/// # let _ = config;
/// # Ok::<(), chunkbus_client::tls::TlsError>(())
/// ```
pub fn untrusting_config() -> Result<ClientConfig, TlsError> {
    config_with(RootCertStore::empty())
}

fn config_with(roots: RootCertStore) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connector for `http://` and `https://` URLs (the latter verified with
/// `tls`).
///
/// ```
/// let tls = chunkbus_client::tls::untrusting_config()?;
/// let connector = chunkbus_client::tls::connector(tls);
/// # let _ = connector;
/// # Ok::<(), chunkbus_client::tls::TlsError>(())
/// ```
#[must_use]
pub fn connector(tls: ClientConfig) -> Connector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
