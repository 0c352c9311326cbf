//! The emulator's own PKI and its HTTPS (and plain HTTP) listeners.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::world::DropConnection;

/// Names the leaf certificate covers: loopback, and the real service host names so that a client
/// can pin them to loopback and keep every production check on.
const LEAF_NAMES: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "*.vault.azure.net",
    "*.vault.azure.cn",
    "*.vault.usgovcloudapi.net",
    "login.microsoftonline.com",
    "graph.microsoft.com",
];

pub struct Pki {
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

impl Pki {
    /// Loads the CA from `ca.pem` + `ca-key.pem` in `dir` when both exist, else makes a new one
    /// (and stores it there, when a directory is given), then issues a fresh leaf.
    pub fn load_or_generate(dir: Option<&Path>) -> anyhow::Result<Pki> {
        let stored = dir.and_then(|d| {
            let cert = std::fs::read_to_string(d.join("ca.pem")).ok()?;
            let key = std::fs::read_to_string(d.join("ca-key.pem")).ok()?;
            Some((cert, key))
        });
        let (ca_pem, ca_key) = match stored {
            Some((cert, key)) => (cert, KeyPair::from_pem(&key).context("reading ca-key.pem")?),
            None => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                params
                    .distinguished_name
                    .push(DnType::CommonName, "secret-rotator emulator CA");
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                let cert = params.self_signed(&key)?;
                if let Some(d) = dir {
                    write_private(&d.join("ca-key.pem"), &key.serialize_pem())?;
                    std::fs::write(d.join("ca.pem"), cert.pem())?;
                }
                (cert.pem(), key)
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).context("parsing the CA")?;
        let leaf_key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(LEAF_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "secret-rotator emulator");
        let leaf = params.signed_by(&leaf_key, &issuer)?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("CA PEM: {e}"))?;
        let chain = vec![leaf.der().clone(), ca_der];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Pki {
            ca_pem,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

use rustls::pki_types::pem::PemObject;

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

/// Serves `router` on `listener`, over TLS when `tls` is given. Runs until the task is aborted.
pub async fn serve(listener: TcpListener, router: Router, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => serve_connection(TokioIo::new(s), router, peer).await,
                        _ => tracing::debug!(%peer, "TLS handshake failed or timed out"),
                    }
                }
                None => serve_connection(TokioIo::new(stream), router, peer).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, router: Router, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = match router.oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            if response.extensions().get::<DropConnection>().is_some() {
                return Err(Dropped);
            }
            Ok::<_, Dropped>(response)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}
