//! From nothing to a rotating DICOM client: `verify_url` against the emulator's DICOM service
//! (with and without the app's role), `register` end to end and after a kill at every step.

use std::time::Duration;

use crate::harness::*;

/// Seeds a DICOM service on the harness's tenant; returns its changefeed URL and resource id.
async fn dicom(env: &Env) -> (String, String) {
    let report = env
        .em
        .seed(emulator::model::Seed {
            dicom_services: vec![emulator::model::SeedDicomService {
                name: "dicom1".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let d = &report.dicom_services["dicom1"];
    (
        format!("{}/v2/changefeed?limit=1", d.url),
        d.resource_id.clone(),
    )
}

fn grant_dicom_role(env: &Env, app_id: &str, resource_id: &str) {
    let mut state = env.em.world().state_mut();
    let principal = state.sp_by_app_id(app_id).unwrap().id.clone();
    let subscription = state.subscription_id.clone();
    state
        .role_assignments
        .push(emulator::model::RoleAssignment {
            name: uuid::Uuid::new_v4().to_string(),
            scope: resource_id.to_string(),
            role_definition_id: emulator::arm::role_definition_id(
                &subscription,
                "DICOM Data Reader",
            )
            .unwrap(),
            principal_id: principal,
            principal_type: "ServicePrincipal".into(),
            created: String::new(),
        });
}

const DICOM_POLICY: &str = "verify_scope = \"https://dicom.healthcareapis.azure.com/.default\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn verify_url_without_the_role_publishes_and_reports_the_role_to_grant() {
    let env = Env::new(Setup::default()).await;
    let (url, resource) = dicom(&env).await;
    env.write_config(&format!("{DICOM_POLICY}verify_url = \"{url}\"\n"), "");
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The app's role is not the secret's business: the verified secret is published and signs in.
    env.assert_published_valid("app-one");
    let log = stderr(&out);
    assert!(log.contains("verify_url_failed"), "{log}");
    assert!(
        log.contains("403") && log.contains("DICOM Data Owner"),
        "{log}"
    );
    let app_id = env.client("app-one").app_id.clone();
    assert!(log.contains(&format!("--assignee {app_id}")), "{log}");

    let config = path_str(&env.config_path);
    let plan = env
        .cli(&["plan", "--config", &config, "--output", "json"])
        .await;
    let plan_out = stdout(&plan);
    assert!(plan_out.contains("lacks its role"), "{plan_out}");
    let check = env.cli(&["check", "--config", &config, "--online"]).await;
    assert!(
        !check.status.success(),
        "check --online fails while the role is missing"
    );
    assert!(
        stdout(&check).contains("DICOM Data Owner"),
        "{}",
        stdout(&check)
    );

    grant_dicom_role(&env, &app_id, &resource);
    let check = env.cli(&["check", "--config", &config, "--online"]).await;
    assert!(check.status.success(), "{}", stdout(&check));
    let plan = env
        .cli(&["plan", "--config", &config, "--output", "json"])
        .await;
    assert!(
        !stdout(&plan).contains("lacks its role"),
        "{}",
        stdout(&plan)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_url_with_the_role_answers_2xx_and_the_metric_says_so() {
    let env = Env::new(Setup::default()).await;
    let (url, resource) = dicom(&env).await;
    let app_id = env.client("app-one").app_id.clone();
    grant_dicom_role(&env, &app_id, &resource);
    env.write_config(&format!("{DICOM_POLICY}verify_url = \"{url}\"\n"), "");
    let daemon = env.spawn_daemon(&[]);
    let seen = eventually(Duration::from_secs(30), || {
        daemon.stderr().contains("verify_url answered 200")
    })
    .await;
    assert!(seen, "{}", daemon.stderr());
    let (status, metrics) = daemon.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("secret_rotator_verify_url_ok{client=\"app-one\"} 1"),
        "{metrics}"
    );
    env.assert_published_valid("app-one");
    // The DICOM service saw the new secret's token.
    assert!(env.journal().iter().any(|e| e.operation == "dicom.get"
        && e.status == 200
        && e.caller.as_deref() == Some(app_id.as_str())));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verify_scope_without_a_service_principal_is_refused_and_nothing_is_published() {
    let env = Env::new(Setup::default()).await;
    env.write_config("verify_scope = \"api://no-such-api/.default\"\n", "");
    let out = env.rotate("app-one", &["--force"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("AADSTS500011"), "{}", stderr(&out));
    assert!(env.versions("app-one").is_empty(), "nothing published");
}
