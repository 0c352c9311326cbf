//! What the daemon's HTTP clients share to keep TLS handshakes rare: one TLS client
//! configuration, and a first-request gate per host and pool.
//!
//! A TLS handshake is the most expensive thing a rotation does (two ECDSA verifications and a key
//! exchange, about 2.5 million instructions, against a few hundred thousand for the rest of a
//! request), so a rotation should ride on connections that are already open: HTTP/2 carries every
//! concurrent request to a host on one connection. The pool cannot know before the TLS handshake
//! (ALPN) that a host speaks HTTP/2, so when many reconciles start at once and find no
//! connection to a host, each opens its own: the benchmark saw bursts of 20 to 30 handshakes to
//! one host within a second, about 2.4 per rotation. [`Gates`] lets the first request to a host
//! whose pool is (probably) empty go alone; the others wait for its answer and then share the
//! connection it opened (or, from a host that speaks only HTTP/1.1, open what they need).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The TLS client configuration of every HTTP client made from one config: the platform's
/// roots (read and parsed from the system's bundle, which costs about 20 million instructions
/// each time) and `ca_file`, with HTTP/2 offered by ALPN. Clones share it, including rustls's
/// cache of session tickets, so a new connection to a host that issues them resumes the session
/// instead of verifying its certificate chain again.
#[derive(Clone)]
pub struct TlsConfig(Arc<rustls::ClientConfig>);

impl TlsConfig {
    pub fn new(ca_pem: Option<&[u8]>) -> anyhow::Result<TlsConfig> {
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let extra = match ca_pem {
            Some(pem) => CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("reading ca_file: {e}"))?,
            None => Vec::new(),
        };
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsConfig(Arc::new(config)))
    }

    /// The configuration for `reqwest::ClientBuilder::tls_backend_preconfigured`.
    pub fn rustls(&self) -> rustls::ClientConfig {
        (*self.0).clone()
    }
}

/// Which of [`super::AzureHttp`]'s clients a request goes through: each has its own pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// [`super::AzureHttp::http`]: connections stay 90 s idle.
    Main,
    /// [`super::AzureHttp::secret_http`]: connections leave after
    /// [`super::SECRET_CONNECTION_IDLE`].
    Secret,
}

impl Pool {
    /// How long after its last answer a host's pool is taken to still hold a connection: a
    /// little less than the pool keeps an idle one (it renews a connection's idle time when a
    /// request takes it).
    fn fresh_for(self) -> Duration {
        match self {
            Pool::Main => Duration::from_secs(80),
            Pool::Secret => super::SECRET_CONNECTION_IDLE.mul_f64(0.8),
        }
    }
}

/// The longest a request waits for the first request to its host to be answered.
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// One first-request gate per pool and host (scheme, name and port).
#[derive(Default)]
pub struct Gates {
    hosts: Mutex<HashMap<(Pool, String), Arc<Gate>>>,
}

#[derive(Default)]
struct Gate {
    turn: Arc<tokio::sync::Mutex<()>>,
    answered: Mutex<Option<Instant>>,
}

impl Gate {
    fn fresh(&self, pool: Pool) -> bool {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < pool.fresh_for())
    }
}

/// A request's permission to go: hold it until the request is answered, then call
/// [`Pass::answered`]. While it is the first request to its host, the others wait for it.
pub struct Pass {
    gate: Option<Arc<Gate>>,
    _first: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Pass {
    /// Any answer means the connection is up and in the pool: the next requests may share it.
    pub fn answered(self) {
        if let Some(g) = &self.gate {
            *g.answered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }
}

impl Gates {
    /// Waits, when `url`'s host has had no answer in `pool` recently, until the first request
    /// to it has been answered (or failed).
    pub async fn pass(&self, pool: Pool, uri: &http::Uri) -> Pass {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let key = (
            pool,
            format!(
                "{}://{}:{}",
                uri.scheme_str().unwrap_or(""),
                uri.host().unwrap_or(""),
                uri.port_u16().unwrap_or(if https { 443 } else { 80 })
            ),
        );
        let gate = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts.entry(key).or_default().clone()
        };
        if gate.fresh(pool) {
            return Pass {
                gate: Some(gate),
                _first: None,
            };
        }
        // A first request that is slow to be answered (a held or throttled one) holds the
        // others up only for a moment; then they go, as they would without the gate.
        let Ok(turn) = tokio::time::timeout(FIRST_WAIT, gate.turn.clone().lock_owned()).await
        else {
            return Pass {
                gate: Some(gate),
                _first: None,
            };
        };
        // The request that went first may have opened the connection meanwhile.
        let first = (!gate.fresh(pool)).then_some(turn);
        Pass {
            gate: Some(gate),
            _first: first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn requests_to_a_new_host_wait_for_the_first_ones_answer_then_share_it() {
        let gates = Arc::new(Gates::default());
        let vault = url("https://kv.example:443/secrets/a");
        let first = gates.pass(Pool::Secret, &vault).await;
        assert!(first._first.is_some(), "the first request goes alone");
        let second = {
            let gates = gates.clone();
            let vault = url("https://kv.example/secrets/b");
            tokio::spawn(async move { gates.pass(Pool::Secret, &vault).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "the second waits for the first");
        // Another pool's connections are its own: no waiting on this one.
        let main = gates.pass(Pool::Main, &vault).await;
        assert!(main._first.is_some());
        first.answered();
        let second = second.await.unwrap();
        assert!(second._first.is_none(), "the second shares the connection");
        second.answered();
        let third = gates.pass(Pool::Secret, &vault).await;
        assert!(
            third._first.is_none(),
            "a host answered just now lets requests go"
        );
    }

    #[tokio::test]
    async fn a_first_request_that_fails_hands_the_turn_to_the_next() {
        let gates = Gates::default();
        let graph = url("https://graph.example/v1.0/applications");
        let first = gates.pass(Pool::Main, &graph).await;
        drop(first);
        let next = gates.pass(Pool::Main, &graph).await;
        assert!(
            next._first.is_some(),
            "no answer yet: the next one goes first"
        );
    }
}
