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
    assert!(
        env.journal()
            .iter()
            .any(|e| e.operation == Operation::DicomGet
                && e.status == 200
                && e.caller.as_deref() == Some(app_id.as_str()))
    );
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

/// A tenant with no clients, a DICOM service on which the daemon may assign roles, and a
/// `clients_dir` in the config.
async fn empty_tenant() -> (Env, String, std::path::PathBuf) {
    tenant_where_the_daemon_may_assign(true).await
}

async fn tenant_where_the_daemon_may_assign(may: bool) -> (Env, String, std::path::PathBuf) {
    let env = Env::new(Setup {
        clients: vec![],
        ..Setup::default()
    })
    .await;
    let report = env
        .em
        .seed(emulator::model::Seed {
            dicom_services: vec![emulator::model::SeedDicomService {
                name: "dicom1".into(),
            }],
            role_assignments: if may {
                vec![emulator::model::SeedRoleAssignment {
                    principal: env.daemon_app_id.clone(),
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
    let dir = env.dir.path().join("clients.d");
    std::fs::create_dir(&dir).unwrap();
    env.edit_config(
        "instance = \"test\"",
        "instance = \"test\"\nclients_dir = \"clients.d\"",
    );
    env.edit_config(
        "[azure]\n",
        &format!(
            "[azure]\nresource_manager_endpoint = \"{}\"\n",
            env.em.info().arm_endpoint
        ),
    );
    (
        env,
        report.dicom_services["dicom1"].resource_id.clone(),
        dir,
    )
}

fn register_args<'a>(
    env: &'a Env,
    config: &'a str,
    resource: &'a str,
    dir: &'a str,
) -> Vec<&'a str> {
    vec![
        "register",
        "--config",
        config,
        "dicom-reader",
        "--vault",
        env.vault_url.as_str(),
        "--api",
        "dicom",
        "--assign-role",
        "DICOM Data Reader",
        "--scope",
        resource,
        "--write-client",
        dir,
    ]
}

const TAG: &str = "secret-rotator-register:test:dicom-reader";

/// What a registration left in the tenant: applications with its tag, their service
/// principals, the vault secret's versions, the live credentials.
fn registered(env: &Env) -> (usize, usize, usize, usize) {
    let state = env.em.world().state();
    let apps: Vec<_> = state
        .applications
        .iter()
        .filter(|a| a.tags.iter().any(|t| t == TAG))
        .collect();
    let sps = apps
        .iter()
        .filter(|a| state.sp_by_app_id(&a.app_id).is_some())
        .count();
    let versions = state.vaults["kv-test"]
        .secrets
        .get("dicom-reader-client-secret")
        .map(|s| s.versions.len())
        .unwrap_or(0);
    let live = apps
        .iter()
        .map(|a| a.passwords.iter().filter(|p| p.removed.is_none()).count())
        .sum();
    (apps.len(), sps, versions, live)
}

/// The latest version's value is a live credential of the registered app, named by its key-id.
fn published_is_live(env: &Env) -> bool {
    let state = env.em.world().state();
    let Some(latest) = state.vaults["kv-test"]
        .secrets
        .get("dicom-reader-client-secret")
        .and_then(|s| s.versions.last())
    else {
        return false;
    };
    state
        .applications
        .iter()
        .filter(|a| a.tags.iter().any(|t| t == TAG))
        .flat_map(|a| a.passwords.iter())
        .any(|p| {
            p.removed.is_none()
                && Some(&p.key_id) == latest.tags.get("key-id")
                && p.secret_text == latest.value
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn register_makes_a_working_dicom_client_that_the_daemon_picks_up_on_sighup() {
    let (env, resource, dir) = empty_tenant().await;
    let config = path_str(&env.config_path);
    let dir_text = path_str(&dir);
    let daemon = env.spawn_daemon(&[]);
    let mut ready = false;
    for _ in 0..100 {
        if daemon.get("/readyz").await.map(|r| r.0) == Some(200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "{}", daemon.stderr());
    let out = env
        .cli(&register_args(&env, &config, &resource, &dir_text))
        .await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(registered(&env), (1, 1, 1, 1), "{}", stdout(&out));
    // Never printed: no value the tenant minted appears in what register wrote.
    for value in minted(&env) {
        assert!(!stdout(&out).contains(&value) && !stderr(&out).contains(&value));
    }
    let (app_id, owners, audience, redirects) = {
        let state = env.em.world().state();
        let app = state
            .applications
            .iter()
            .find(|a| a.tags.iter().any(|t| t == TAG))
            .unwrap();
        (
            app.app_id.clone(),
            app.owners.clone(),
            app.sign_in_audience.clone(),
            app.redirect_uris.clone(),
        )
    };
    assert_eq!(owners, vec![env.daemon_app_id.clone()]);
    assert_eq!(audience, "AzureADMyOrg");
    assert!(redirects.is_empty());
    let version = env.em.world().state().vaults["kv-test"].secrets["dicom-reader-client-secret"]
        .versions[0]
        .clone();
    assert_eq!(version.tags["managed-by"], "secret-rotator");
    assert_eq!(version.tags["client-id"], app_id);

    // The consumer's view: the published value gets a DICOM token and reads the change feed
    // (register assigned the role through ARM).
    let info = env.em.info();
    let http = env.https();
    let token = env
        .access_token(
            &app_id,
            &version.value,
            "https://dicom.healthcareapis.azure.com/.default",
        )
        .await;
    let feed = http
        .get(format!(
            "{}/v2/changefeed?limit=1",
            info.dicom_services["dicom1"].url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status().as_u16(), 200);

    let file = std::fs::read_to_string(dir.join("dicom-reader.toml")).unwrap();
    assert!(
        file.contains(&app_id) && file.contains("dicom.healthcareapis.azure.com"),
        "{file}"
    );
    daemon.signal("HUP");
    let picked_up = async {
        for _ in 0..100 {
            if let Some((200, body)) = daemon.get("/v1/clients").await
                && body.contains("dicom-reader")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    };
    assert!(picked_up.await, "{}", daemon.stderr());

    // A second run changes nothing.
    let again = env
        .cli(&register_args(&env, &config, &resource, &dir_text))
        .await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(registered(&env), (1, 1, 1, 1));
    let state = env.em.world().state();
    let sp = state.sp_by_app_id(&app_id).unwrap().id.clone();
    assert_eq!(
        state
            .role_assignments
            .iter()
            .filter(|r| r.principal_id == sp)
            .count(),
        1,
        "the role was assigned once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn register_killed_at_every_step_then_rerun_leaves_one_app_one_principal_one_secret() {
    use emulator::world::{FaultKind, FaultRule};
    let steps = [
        (Operation::GraphCreateApplication, FaultKind::HoldAfter),
        (Operation::GraphCreateServicePrincipal, FaultKind::HoldAfter),
        (Operation::ArmPutRoleAssignment, FaultKind::HoldAfter),
        (Operation::GraphAddPassword, FaultKind::HoldAfter),
        (Operation::KeyvaultSetSecret, FaultKind::HoldBefore),
        (Operation::KeyvaultSetSecret, FaultKind::HoldAfter),
    ];
    for (operation, kind) in steps {
        let (env, resource, dir) = empty_tenant().await;
        let config = path_str(&env.config_path);
        let dir_text = path_str(&dir);
        if operation == Operation::GraphCreateApplication {
            // Graph's listings lag a create: the rerun does not see the app at once, and finds
            // it only because the killed run left its marker.
            env.em.world().state_mut().settings.read_lag_ms = 3_000;
        }
        env.em.world().add_fault(FaultRule {
            operation,
            target: None,
            count: 1,
            kind: kind.clone(),
        });
        let mut child = env
            .command(&register_args(&env, &config, &resource, &dir_text))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let held = eventually(Duration::from_secs(30), || {
            !env.em.world().held_calls().is_empty()
        })
        .await;
        assert!(held, "{operation}: register reached the step");
        child.kill().unwrap();
        child.wait().unwrap();
        // What the killed call did, Azure finishes (or not) before the rerun.
        env.em.world().release_all();
        tokio::time::sleep(Duration::from_millis(300)).await;

        let out = env
            .cli(&register_args(&env, &config, &resource, &dir_text))
            .await;
        assert!(
            out.status.success(),
            "{operation} {kind:?}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let (apps, sps, versions, live) = registered(&env);
        assert_eq!((apps, sps, versions), (1, 1, 1), "{operation} {kind:?}");
        // An attempt killed before its publish landed left a credential the protocol removes
        // (at once when it never reached publishing, after the orphan age otherwise).
        let most = if matches!(kind, FaultKind::HoldBefore) {
            2
        } else {
            1
        };
        assert!(
            (1..=most).contains(&live),
            "{operation} {kind:?}: {live} live credentials"
        );
        assert!(published_is_live(&env), "{operation} {kind:?}");
        assert!(dir.join("dicom-reader.toml").exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn register_without_the_right_to_assign_roles_prints_the_command_and_still_publishes() {
    let (env, resource, dir) = tenant_where_the_daemon_may_assign(false).await;
    let config = path_str(&env.config_path);
    let out = env
        .cli(&register_args(&env, &config, &resource, &path_str(&dir)))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let sp = {
        let state = env.em.world().state();
        let app = state
            .applications
            .iter()
            .find(|a| a.tags.iter().any(|t| t == TAG))
            .unwrap();
        state.sp_by_app_id(&app.app_id).unwrap().id.clone()
    };
    assert!(
        text.contains(&format!(
            "az role assignment create --assignee-object-id {sp} --assignee-principal-type ServicePrincipal --role \"DICOM Data Reader\" --scope {resource}"
        )),
        "{text}"
    );
    assert_eq!(registered(&env), (1, 1, 1, 1));
    assert!(env.em.world().state().role_assignments.is_empty());
}
