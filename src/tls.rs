//! Server-side TLS (rustls): the acceptor built from `--tls-cert` and
//! `--tls-key` (PEM files), and the client configuration this server uses
//! for `https://` peers (`--tls-ca`).
//!
//! The crypto provider is aws-lc-rs, passed explicitly (see
//! [`chunkbus_client::tls::provider`]), never the process default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS set-up failures; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A PEM file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {why}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the certificate/key pair or the CA set.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the acceptor for a certificate chain and its private key.
///
/// # Errors
/// Unreadable files, PEM without a certificate or key, or a key that does
/// not match the certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Pem {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Pem {
            path: cert.to_path_buf(),
            why: "no CERTIFICATE block".to_owned(),
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsSetupError::Pem {
        path: key.to_path_buf(),
        why: format!("no usable private key ({e})"),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(chunkbus_client::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client configuration for `https://` peers: trusts the CA
/// certificates in `ca` (PEM).
///
/// # Errors
/// An unreadable file or one without certificates.
pub fn peer_client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsSetupError> {
    let pem = read(ca)?;
    chunkbus_client::tls::client_config(&pem).map_err(|e| TlsSetupError::Pem {
        path: ca.to_path_buf(),
        why: e.to_string(),
    })
}
