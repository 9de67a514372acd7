//! The served TLS settings: `tls_cert` and `tls_key` (PEM files, read with
//! rustls-pki-types) and the rustls server configuration built from them
//! (TLS 1.2 and 1.3, ALPN `http/1.1`, the ring provider).
//!
//! The files are read and parsed whenever the configuration is loaded, at
//! startup and on every reload: a file that cannot be read or parsed, or a
//! key that does not match the certificate, is a [`ConfigError`] naming
//! the file, so the server does not start, or a reload keeps the running
//! certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ConfigError;

/// A certificate chain and its key, loaded, and the server configuration
/// that serves them. Two are equal when their files' paths and contents
/// are (a reload that finds the same bytes changes nothing).
#[derive(Clone)]
pub struct Tls {
    /// `tls_cert`: the PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// `tls_key`: the PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// What new connections are served with.
    pub server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.key == other.key
            && self.cert_pem == other.cert_pem
            && self.key_pem == other.key_pem
    }
}

impl Tls {
    /// Whether the certificate (path or contents) differs from `other`'s.
    pub fn cert_differs(&self, other: &Tls) -> bool {
        self.cert != other.cert || self.cert_pem != other.cert_pem
    }

    /// Whether the key (path or contents) differs from `other`'s.
    pub fn key_differs(&self, other: &Tls) -> bool {
        self.key != other.key || self.key_pem != other.key_pem
    }

    /// Reads and parses both files and builds the server configuration.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, ConfigError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let bad = |name: &'static str, path: &Path, reason: String| ConfigError::Invalid {
            name,
            reason: format!("{}: {reason}", path.display()),
        };
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                bad(
                    "tls_cert",
                    cert,
                    format!("not a PEM certificate file ({e})"),
                )
            })?;
        if chain.is_empty() {
            return Err(bad(
                "tls_cert",
                cert,
                "no CERTIFICATE block in the file".into(),
            ));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            bad(
                "tls_key",
                key,
                format!("no PEM private key in the file ({e})"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| bad("tls_cert", cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                bad(
                    "tls_key",
                    key,
                    format!(
                        "does not go with the certificate in {} ({e})",
                        cert.display()
                    ),
                )
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            cert_pem,
            key_pem,
            server: Arc::new(server),
        })
    }

    /// The TLS settings of a load: both files or neither.
    pub(super) fn resolve(
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Tls>, ConfigError> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Tls::load(cert, key).map(Some),
            (Some(_), None) => Err(ConfigError::Invalid {
                name: "tls_key",
                reason: "tls_cert is set but tls_key is not: set both or neither".into(),
            }),
            (None, Some(_)) => Err(ConfigError::Invalid {
                name: "tls_cert",
                reason: "tls_key is set but tls_cert is not: set both or neither".into(),
            }),
        }
    }
}
