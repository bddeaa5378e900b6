//! HTTPS: the smart HTTP front-end behind TLS (rustls, with the *ring* provider).
//!
//! [`server_config`] reads a PEM certificate chain and private key into a rustls
//! [`ServerConfig`](rustls::ServerConfig) that offers HTTP/1.1 by ALPN; [`serve_tls`] is
//! [`serve`](super::serve) with a TLS handshake on each accepted connection before HTTP
//! starts. The handshake is bounded by the header timeout, like the request head that
//! follows it.

use std::{future::Future, path::Path, path::PathBuf, sync::Arc};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

pub use tokio_rustls::rustls;

use super::{HttpOptions, SmartHttpHandler};

/// Why a certificate and key could not be made into a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds malformed PEM.
    #[error("could not read the certificate chain from {path}: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("no certificate in {path}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file could not be read, or holds no private key.
    #[error("could not read a private key from {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("invalid certificate or key: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS server configuration from a PEM certificate chain (leaf first) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1), with rustls' safe defaults and ALPN `http/1.1`.
pub fn server_config(
    certificate: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: certificate.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: certificate.to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    // The provider is named, not taken from the process default, so another crate enabling
    // a second provider cannot make this ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accept connections on `listener` until `shutdown` completes; each one does a TLS
/// handshake (within the header timeout) and is then served with
/// [`serve_connection`](super::serve_connection), under the same caps as plain HTTP (a handshake in progress is a
/// waiting connection; a request beyond the session cap is answered `503`).
pub async fn serve_tls<H: SmartHttpHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: HttpOptions,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let options = Arc::new(options);
    let acceptor = TlsAcceptor::from(tls);
    let limits = options.connection_limits();
    crate::listener::accept_loop(
        listener,
        limits,
        shutdown,
        move |stream, peer, admission| {
            let handler = Arc::clone(&handler);
            let options = Arc::clone(&options);
            let acceptor = acceptor.clone();
            async move {
                let (stream, probe) = crate::http::SharedStream::new(stream);
                let stream =
                    match tokio::time::timeout(options.header_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%err, "TLS handshake failed");
                            return Ok(());
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return Ok(());
                        }
                    };
                crate::http::serve_admitted(
                    stream,
                    handler,
                    options,
                    Some(admission),
                    Some(peer),
                    Some(probe),
                    None,
                )
                .await
                .map(drop)
            }
            .instrument(tracing::info_span!("https", %peer))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{GitRequest, Refusal};
    use std::{
        io::{Read, Write},
        time::Duration,
    };

    struct Nothing;

    impl SmartHttpHandler for Nothing {
        type Session = ();

        fn open(&self, _: &GitRequest) -> Result<(), Refusal> {
            Err(Refusal::NotFound)
        }

        fn serve(&self, (): (), _: &GitRequest, _: &mut dyn Read, _: &mut dyn Write) {}
    }

    /// A self-signed certificate and its key, as PEM files in `dir`.
    fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn configurations_from_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certificate(dir.path());
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);

        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            server_config(&missing, &key),
            Err(TlsError::Certificate { .. })
        ));
        // The key where the certificate should be, and the other way round.
        assert!(matches!(
            server_config(&key, &key),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(
            server_config(&cert, &cert),
            Err(TlsError::Key { .. })
        ));
        // A key that does not belong to the certificate.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, other_key) = certificate(&other);
        let err = server_config(&cert, &other_key).unwrap_err();
        assert!(matches!(err, TlsError::Config(_)), "{err}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_silent_client_is_dropped_after_the_header_timeout() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certificate(dir.path());
        let config = server_config(&cert, &key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let options = HttpOptions {
            header_timeout: Duration::from_millis(300),
            ..HttpOptions::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_tls(
            listener,
            Arc::new(Nothing),
            options,
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        // Connects, and never starts the handshake.
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let started = std::time::Instant::now();
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("the connection outlived the header timeout");
        assert_eq!(read.unwrap_or(0), 0);
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "closed too early"
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
