//! The TLS settings of a `wss://` connection: which certificate authorities
//! to trust.
//!
//! rustls with the `ring` provider (built by the `cc` crate with the
//! system C compiler alone; aws-lc, rustls's default, also wants cmake and
//! a heavier toolchain on every machine that builds natter), run
//! through futures-rustls, whose streams sit on any futures
//! `AsyncRead + AsyncWrite` — natter_runtime's `TcpStream` on either
//! runtime. Public roots come from webpki-roots (compiled in, so no OS
//! certificate store is needed); `--ca FILE` replaces them with the
//! certificates in a PEM file, for a server with a private certificate.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::ClientError;

/// A client configuration trusting the public web roots, or only the
/// certificates in `ca_file` when one is given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let bad = |why: String| ClientError::Certificate {
                path: path.display().to_string(),
                why,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no CERTIFICATE block in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
    }
    // rustls 0.23.48 deprecates the ring provider because it has no
    // post-quantum key exchange; the alternative, aws-lc, needs a C
    // toolchain (see the module doc). Classical X25519/P-256 it is.
    #[allow(deprecated)]
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
