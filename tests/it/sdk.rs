//! The official Rust Key Vault crate with `azure_identity`, used directly against the emulator:
//! an independent check of the emulator's Key Vault and token endpoint.

use std::sync::Arc;

use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::models::{
    SecretClientGetSecretOptions, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_official_rust_key_vault_crate_works_against_the_emulator() {
    let env = Env::new(Setup::default()).await;
    let info = env.em.info();
    let http = env.https();
    let mut custom = azure_core::cloud::CustomConfiguration::default();
    custom.authority_host = info.authority_host.clone();
    let options = ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(custom.into())),
        ..Default::default()
    };
    let credential = ClientSecretCredential::new(
        &env.tenant,
        env.daemon_app_id.clone(),
        DAEMON_SECRET.to_string().into(),
        Some(ClientSecretCredentialOptions {
            client_options: options.clone(),
        }),
    )
    .unwrap();
    let client = SecretClient::new(
        &env.vault_url,
        credential,
        Some(SecretClientOptions {
            client_options: options,
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .unwrap();

    let set = |value: &str| {
        SetSecretParameters {
            value: Some(value.into()),
            ..Default::default()
        }
        .try_into()
        .unwrap()
    };
    let first = client
        .set_secret("rust-sdk", set("one"), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let first_version = first
        .id
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    client
        .set_secret("rust-sdk", set("two"), None)
        .await
        .unwrap();
    let latest = client
        .get_secret("rust-sdk", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.value.as_deref(), Some("two"));
    let old = client
        .get_secret(
            "rust-sdk",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(first_version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(old.value.as_deref(), Some("one"));
    let mut pager = client
        .list_secret_properties_versions("rust-sdk", None)
        .unwrap();
    let mut count = 0;
    while let Some(_p) = pager.try_next().await.unwrap() {
        count += 1;
    }
    assert_eq!(count, 2);
    let update = UpdateSecretPropertiesParameters {
        tags: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
    .try_into()
    .unwrap();
    let updated = client
        .update_secret_properties("rust-sdk", update, Some(azure_security_keyvault_secrets::models::SecretClientUpdateSecretPropertiesOptions { secret_version: Some(first_version), ..Default::default() }))
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        updated.tags.unwrap().get("k").map(String::as_str),
        Some("v")
    );
    client.delete_secret("rust-sdk", None).await.unwrap();
    let missing = client.get_secret("rust-sdk", None).await.unwrap_err();
    assert_eq!(missing.http_status().map(u16::from), Some(404));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_serves_with_a_ca_it_is_given() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "operator's test CA");
    let ca = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("given-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("given-ca-key.pem"), key.serialize_pem()).unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_secret-rotator"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--ca-cert")
        .arg(dir.path().join("given-ca.pem"))
        .arg("--ca-key")
        .arg(dir.path().join("given-ca-key.pem"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).expect("the start line");
    assert_eq!(
        std::fs::read_to_string(info["ca_file"].as_str().unwrap()).unwrap(),
        ca.pem()
    );
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let r = http
        .get(format!(
            "{}/control/operations",
            info["control_url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "served with a certificate the given CA issued"
    );
    let _ = child.kill();
    let _ = child.wait();
}
