//! Creating a client from nothing, as a client sees it over HTTPS: Graph applications and
//! service principals with owners and tags (and the advanced-query rules of `$filter`), the
//! token endpoint's refusal of a resource without a service principal, ARM role assignments,
//! and a DICOM service that checks audience and role.

#![allow(clippy::disallowed_methods)]

use secret_rotator_emulator::model::{
    Seed, SeedApplication, SeedDicomService, SeedPassword, SeedRoleAssignment,
};
use secret_rotator_emulator::{Emulator, Options, SeedReport};
use serde_json::{Value, json};

const SECRET: &str = "rotator-secret-Q~0123456789abcdefghijklmn";
const ADMIN_SECRET: &str = "admin-secret-Q~0123456789abcdefghijklmnop";
const DICOM_SCOPE: &str = "https://dicom.healthcareapis.azure.com/.default";

struct Tenant {
    em: Emulator,
    _dir: tempfile::TempDir,
    report: SeedReport,
    http: reqwest::Client,
}

impl Tenant {
    /// The daemon's identity (`Application.ReadWrite.OwnedBy`, Owner of the DICOM service when
    /// `may_assign`), an admin with `Application.ReadWrite.All`, one DICOM service.
    async fn new(may_assign: bool) -> Tenant {
        let dir = tempfile::tempdir().unwrap();
        let em = Emulator::start(Options::loopback_in(dir.path()))
            .await
            .unwrap();
        let rotator = uuid::Uuid::new_v4().to_string();
        let report = em
            .seed(Seed {
                applications: vec![
                    SeedApplication {
                        app_id: Some(rotator.clone()),
                        graph_roles: vec!["Application.ReadWrite.OwnedBy".into()],
                        password_credentials: vec![SeedPassword::new(None, Some(SECRET))],
                        ..SeedApplication::new("rotator")
                    },
                    SeedApplication {
                        graph_roles: vec!["Application.ReadWrite.All".into()],
                        password_credentials: vec![SeedPassword::new(None, Some(ADMIN_SECRET))],
                        ..SeedApplication::new("admin")
                    },
                ],
                dicom_services: vec![SeedDicomService {
                    name: "dicom1".into(),
                }],
                role_assignments: if may_assign {
                    vec![SeedRoleAssignment {
                        principal: rotator,
                        role: "User Access Administrator".into(),
                        scope: "dicom:dicom1".into(),
                    }]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
            .await
            .unwrap();
        let ca = std::fs::read(em.info().ca_file).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        Tenant {
            em,
            _dir: dir,
            report,
            http,
        }
    }

    fn rotator(&self) -> &str {
        &self.report.applications[0].app_id
    }

    async fn token_answer(&self, app_id: &str, secret: &str, scope: &str) -> (u16, Value) {
        let info = self.em.info();
        let r = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                info.authority_host, info.tenant_id
            ))
            .form(&[
                ("client_id", app_id),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn token(&self, app_id: &str, secret: &str, scope: &str) -> String {
        let (status, body) = self.token_answer(app_id, secret, scope).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn graph(
        &self,
        secret: &str,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let app = if secret == SECRET {
            self.report.applications[0].app_id.clone()
        } else {
            self.report.applications[1].app_id.clone()
        };
        let token = self
            .token(&app, secret, "https://graph.microsoft.com/.default")
            .await;
        let mut r = self
            .http
            .request(
                method,
                format!("{}/v1.0/{path}", self.em.info().graph_endpoint),
            )
            .bearer_auth(token);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn arm_put(
        &self,
        secret: &str,
        app: &str,
        scope: &str,
        role: &str,
        principal: &str,
    ) -> (u16, Value) {
        let token = self
            .token(app, secret, "https://management.azure.com/.default")
            .await;
        let info = self.em.info();
        let r = self
            .http
            .put(format!(
                "{}{scope}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
                info.arm_endpoint,
                uuid::Uuid::new_v4()
            ))
            .bearer_auth(token)
            .json(&json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}", info.subscription_id),
                "principalId": principal,
                "principalType": "ServicePrincipal",
            }}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn changefeed(&self, token: &str) -> u16 {
        let url = &self.em.info().dicom_services["dicom1"].url;
        self.http
            .get(format!("{url}/v2/changefeed?limit=1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

const DICOM_OWNER: &str = "58a3b984-7adf-4c20-983a-32417c86fbc8";

#[tokio::test]
async fn an_app_created_by_the_rotator_is_its_own_and_signs_in_only_with_a_service_principal() {
    let t = Tenant::new(true).await;
    let (status, app) = t
        .graph(
            SECRET,
            reqwest::Method::POST,
            "applications",
            &[],
            Some(json!({"displayName": "dicom-client", "signInAudience": "AzureADMyOrg", "tags": ["secret-rotator:default:dicom-client"]})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["signInAudience"], "AzureADMyOrg");
    assert_eq!(app["web"]["redirectUris"], json!([]));
    let (id, app_id) = (
        app["id"].as_str().unwrap().to_string(),
        app["appId"].as_str().unwrap().to_string(),
    );
    let (status, owners) = t
        .graph(
            SECRET,
            reqwest::Method::GET,
            &format!("applications/{id}/owners"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(owners["value"][0]["appId"], t.rotator(), "{owners}");
    assert_eq!(
        owners["value"][0]["@odata.type"],
        "#microsoft.graph.servicePrincipal"
    );

    // Listings lag the create by the read lag (1 s by default); then the tag finds it, without
    // advanced query parameters.
    let (status, found) = t
        .graph(
            SECRET,
            reqwest::Method::GET,
            "applications?$filter=tags/any(t:t%20eq%20'secret-rotator:default:dicom-client')",
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["value"], json!([]), "not in a listing yet");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, found) = t
        .graph(
            SECRET,
            reqwest::Method::GET,
            "applications?$filter=tags/any(t:t%20eq%20'secret-rotator:default:dicom-client')",
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["value"].as_array().unwrap().len(), 1);
    assert_eq!(found["value"][0]["id"], id.as_str());

    // A password on an app without a service principal does not sign in. (Writes to one app
    // closer than the concurrency window get 409, as right after creation in Graph.)
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, pw) = t
        .graph(
            SECRET,
            reqwest::Method::POST,
            &format!("applications/{id}/addPassword"),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{pw}");
    let secret = pw["secretText"].as_str().unwrap().to_string();
    t.em.world().state_mut().settings.propagation_max_ms = 0;
    t.em.world().state_mut().settings.propagation_min_ms = 0;
    let (status, body) = t.token_answer(&app_id, &secret, DICOM_SCOPE).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_codes"][0], 7000229, "{body}");

    let (status, sp) = t
        .graph(
            SECRET,
            reqwest::Method::POST,
            "servicePrincipals",
            &[],
            Some(json!({"appId": app_id})),
        )
        .await;
    assert_eq!(status, 201, "{sp}");
    let (status, again) = t
        .graph(
            SECRET,
            reqwest::Method::POST,
            "servicePrincipals",
            &[],
            Some(json!({"appId": app_id})),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        again["error"]["code"],
        "Request_MultipleObjectsWithSameKeyValue"
    );
    let (status, by_app) = t
        .graph(
            SECRET,
            reqwest::Method::GET,
            &format!("servicePrincipals?$filter=appId%20eq%20'{app_id}'"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_app["value"][0]["id"], sp["id"]);

    let token = t.token(&app_id, &secret, DICOM_SCOPE).await;
    assert_eq!(t.changefeed(&token).await, 403, "no role yet");
    let graph_token = t
        .token(&app_id, &secret, "https://graph.microsoft.com/.default")
        .await;
    assert_eq!(t.changefeed(&graph_token).await, 401, "wrong audience");

    let scope = t.em.info().dicom_services["dicom1"].resource_id.clone();
    let (status, assignment) = t
        .arm_put(
            SECRET,
            t.rotator(),
            &scope,
            DICOM_OWNER,
            sp["id"].as_str().unwrap(),
        )
        .await;
    assert_eq!(status, 201, "{assignment}");
    assert_eq!(t.changefeed(&token).await, 200);
}

#[tokio::test]
async fn a_scope_whose_resource_has_no_service_principal_is_refused() {
    let t = Tenant::new(false).await;
    let (status, body) = t
        .token_answer(t.rotator(), SECRET, "api://no-such-api/.default")
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_resource");
    assert_eq!(body["error_codes"][0], 500011);
    for scope in [
        DICOM_SCOPE,
        "https://vault.azure.net/.default",
        "https://management.azure.com//.default",
        "https://ws-fhir1.fhir.azurehealthcareapis.com/.default",
        "00000003-0000-0000-c000-000000000000/.default",
    ] {
        let (status, body) = t.token_answer(t.rotator(), SECRET, scope).await;
        assert_eq!(status, 200, "{scope}: {body}");
    }
}

#[tokio::test]
async fn role_assignments_need_the_right_to_assign() {
    let t = Tenant::new(false).await;
    let scope = t.em.info().dicom_services["dicom1"].resource_id.clone();
    let (status, body) = t
        .arm_put(
            SECRET,
            t.rotator(),
            &scope,
            DICOM_OWNER,
            &t.report.applications[1].service_principal_id,
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
}

#[tokio::test]
async fn negated_tag_filters_need_advanced_query_parameters() {
    let t = Tenant::new(false).await;
    let path = "applications?$filter=not(tags/any(t:t%20eq%20'x'))";
    let (status, body) = t
        .graph(ADMIN_SECRET, reqwest::Method::GET, path, &[], None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "Request_UnsupportedQuery");
    let (status, _) = t
        .graph(
            ADMIN_SECRET,
            reqwest::Method::GET,
            path,
            &[("ConsistencyLevel", "eventual")],
            None,
        )
        .await;
    assert_eq!(
        status, 400,
        "the header alone is not enough: $count=true too"
    );
    let (status, body) = t
        .graph(
            ADMIN_SECRET,
            reqwest::Method::GET,
            &format!("{path}&$count=true"),
            &[("ConsistencyLevel", "eventual")],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["@odata.count"], 2);
    // $count=true without the header is ignored, not refused.
    let (status, body) = t
        .graph(
            ADMIN_SECRET,
            reqwest::Method::GET,
            "applications?$count=true",
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.get("@odata.count").is_none());
    let (status, _) = t
        .graph(
            ADMIN_SECRET,
            reqwest::Method::GET,
            "applications?$search=%22displayName:a%22",
            &[],
            None,
        )
        .await;
    assert_eq!(status, 400);
}
