//! TLS on the chat port: `--tls-cert FILE --tls-key FILE` (PEM).
//!
//! rustls through futures-rustls, with the `ring` crypto provider: pure
//! Rust plus a little C that the `cc` crate builds with the system
//! compiler (aws-lc, rustls' default, also wants cmake). The client uses
//! the same stack for `wss://` (`client/src/tls.rs`). With TLS on, the port
//! speaks TLS only: `wss://…/ws` and the pages over `https://`; a plain
//! request fails its TLS handshake and the socket is closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use futures_rustls::rustls::ServerConfig;
use futures_rustls::rustls::crypto::ring;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM block.
    #[error("cannot use {what} {}: {why}", path.display())]
    File {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file, as given.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("cannot use the certificate {} with the key {}: {why}", cert.display(), key.display())]
    Pair {
        /// `--tls-cert`.
        cert: PathBuf,
        /// `--tls-key`.
        key: PathBuf,
        /// rustls' words.
        why: String,
    },
}

/// Reads the certificate chain and key and builds the acceptor.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let file_error = |what, path: &Path, why: String| TlsError::File {
        what,
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error("certificate", cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            "certificate",
            cert,
            "no CERTIFICATE block in the file".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error("private key", key, e.to_string()))?;
    let pair_error = |why: String| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        why,
    };
    // ring's default provider is deprecated for lacking post-quantum key
    // exchange; the alternative, aws-lc, needs cmake and a heavier C
    // toolchain. Classical X25519/P-256, as in the client.
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pair_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| pair_error(e.to_string()))?;
    // What a browser offers for a WebSocket or a page: HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
