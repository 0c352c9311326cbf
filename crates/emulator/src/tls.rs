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
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::world::DropConnection;

/// Names the leaf certificate covers: the loopback names the emulator listens on, and nothing
/// else. A leaf for Azure's own host names would let anyone who trusts the CA (and can reach
/// its key in a state dir) impersonate Azure.
const LEAF_NAMES: &[&str] = &["127.0.0.1", "::1", "localhost"];

/// What a generated CA may issue for, enforced by every client that checks name constraints
/// (rustls, OpenSSL, Go, browsers): loopback only, whatever leaf its key signs.
fn loopback_only() -> NameConstraints {
    NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::IpAddress(CidrSubnet::V4([127, 0, 0, 0], [255, 0, 0, 0])),
            GeneralSubtree::IpAddress(CidrSubnet::V6(
                std::net::Ipv6Addr::LOCALHOST.octets(),
                [0xff; 16],
            )),
        ],
        excluded_subtrees: Vec::new(),
    }
}

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
                params.name_constraints = Some(loopback_only());
                let cert = params.self_signed(&key)?;
                if let Some(d) = dir {
                    install_ca(d, &cert.pem(), &key.serialize_pem())?;
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
        // Strict verifiers (OpenSSL's X509_STRICT, Python 3.13's default) want it.
        params.use_authority_key_identifier_extension = true;
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

/// Puts a CA (PEM certificate and key) in a state dir, where [`Pki::load_or_generate`] finds it:
/// the key owner-only, neither written through a symlink.
pub fn install_ca(dir: &Path, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    crate::files::private_dir(dir)?;
    crate::files::replace(&dir.join("ca-key.pem"), key_pem.as_bytes(), 0o600)?;
    crate::files::replace(&dir.join("ca.pem"), cert_pem.as_bytes(), 0o644)
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
        // The journal names each call's User-Agent (a daemon replica puts its name there).
        let agent = req
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect::<String>());
        async move {
            let call = router.oneshot(req.map(Body::new));
            let response = match crate::world::USER_AGENT.scope(agent, call).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    /// Whether a client trusting only the emulator's CA accepts a leaf that CA's key signs for
    /// `name`.
    fn accepted(dir: &Path, name: &str) -> bool {
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let key =
            KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).unwrap()).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, &key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                leaf.der(),
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn the_generated_ca_can_vouch_for_loopback_names_only() {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_generate(Some(dir.path())).unwrap();
        assert!(accepted(dir.path(), "localhost"));
        assert!(accepted(dir.path(), "127.0.0.1"));
        assert!(accepted(dir.path(), "::1"));
        for name in [
            "contoso-kv.vault.azure.net",
            "login.microsoftonline.com",
            "graph.microsoft.com",
            "example.com",
            "10.0.0.1",
        ] {
            assert!(
                !accepted(dir.path(), name),
                "a leaf for {name} passes the CA's name constraints"
            );
        }
    }

    #[test]
    fn the_ca_key_is_owner_only_and_not_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "victim's").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("ca-key.pem.tmp")).unwrap();
        let given = tempfile::tempdir().unwrap();
        Pki::load_or_generate(Some(given.path())).unwrap();
        let read = |p: &str| std::fs::read_to_string(given.path().join(p)).unwrap();
        install_ca(dir.path(), &read("ca.pem"), &read("ca-key.pem")).unwrap();
        for d in [dir.path(), given.path()] {
            let mode = std::fs::metadata(d.join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", d.display());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim's");
        Pki::load_or_generate(Some(dir.path())).expect("the installed CA loads");
    }
}
