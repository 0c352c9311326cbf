//! The daemon signing in without a secret: workload identity federation and managed identity.

use emulator::model::FederatedCredential;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::harness::*;

fn swap_credential(env: &Env, credential: &str) {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let start = text.find("[azure.credential]").unwrap();
    let end = text.find("[daemon]").unwrap();
    let text = format!(
        "{}[azure.credential]\n{credential}\n\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&env.config_path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rotates_when_signed_in_with_workload_identity() {
    let env = Env::new(Setup::default()).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = "https://oidc.cluster.example/issuer";
    let subject = "system:serviceaccount:secret-rotator:secret-rotator";
    {
        let mut state = env.em.world().state_mut();
        let me = state
            .applications
            .iter_mut()
            .find(|a| a.app_id == env.daemon_app_id)
            .unwrap();
        me.passwords.clear();
        me.federated_credentials.push(FederatedCredential {
            issuer: issuer.into(),
            subject: subject.into(),
            audience: "api://AzureADTokenExchange".into(),
            public_key_pem: key.public_key_pem(),
        });
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({"iss": issuer, "sub": subject, "aud": ["api://AzureADTokenExchange"], "iat": now, "nbf": now, "exp": now + 3600});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let token_file = env.dir.path().join("federated-token");
    std::fs::write(&token_file, token).unwrap();
    swap_credential(
        &env,
        &format!(
            "kind = \"workload_identity\"\nclient_id = \"{}\"\nfederated_token_file = \"{}\"",
            env.daemon_app_id,
            token_file.display()
        ),
    );

    let out = env.rotate("app-one", &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_published_valid("app-one");

    // A token signed by another key is refused.
    let other = rcgen::KeyPair::generate().unwrap();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    std::fs::write(&token_file, forged).unwrap();
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(!out.status.success(), "a forged assertion must not sign in");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotates_when_signed_in_with_a_managed_identity() {
    let env = Env::new(Setup::default()).await;
    {
        let mut state = env.em.world().state_mut();
        let me = state
            .applications
            .iter_mut()
            .find(|a| a.app_id == env.daemon_app_id)
            .unwrap();
        me.passwords.clear();
        me.managed_identity = true;
    }
    swap_credential(
        &env,
        &format!(
            "kind = \"managed_identity\"\nclient_id = \"{}\"",
            env.daemon_app_id
        ),
    );
    let info = env.em.info();
    let config = path_str(&env.config_path);
    let mut cmd = env.command(&["rotate", "--config", &config, "app-one"]);
    // A proxy for plain HTTP that does not exist: managed identity endpoints must never use it.
    cmd.env("IDENTITY_ENDPOINT", &info.identity_endpoint)
        .env("IDENTITY_HEADER", &info.identity_header)
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env_remove("NO_PROXY");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_published_valid("app-one");
    assert!(
        env.journal()
            .iter()
            .any(|e| e.operation == Operation::ManagedIdentityToken && e.status == 200)
    );
}

/// A minimal HTTP CONNECT proxy on loopback; counts the tunnels it opened.
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let Some(target) = text
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split_whitespace().next())
                else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (format!("http://{addr}"), tunnels)
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_calls_go_through_https_proxy_unless_no_proxy_names_the_host() {
    let env = Env::new(Setup::default()).await;
    let (proxy, tunnels) = connect_proxy().await;
    let config = path_str(&env.config_path);
    let mut cmd = env.command(&["rotate", "--config", &config, "app-one"]);
    cmd.env("HTTPS_PROXY", &proxy).env_remove("NO_PROXY");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "Azure calls went through the proxy"
    );
    env.assert_published_valid("app-one");

    let before = tunnels.load(std::sync::atomic::Ordering::SeqCst);
    let mut cmd = env.command(&["rotate", "--config", &config, "app-one", "--force"]);
    cmd.env("HTTPS_PROXY", &proxy).env("NO_PROXY", "127.0.0.1");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        tunnels.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "NO_PROXY bypasses the proxy"
    );
}
