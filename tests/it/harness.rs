//! Test harness: an in-process emulator seeded with the daemon's identity, client applications
//! and a vault, a config file pointing at it, and the real `secret-rotator` binary.
//!
//! Over 600 lines: every integration test's one `Env` (seeding, config, the binary, journal and
//! state queries); split, its helpers would have to be found in several files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use emulator::kit::{ConfigSpec, KitClient, Tenant, TenantKit};
use emulator::model::{Application, SecretVersion, Settings};
pub use emulator::operation::Operation;
use emulator::world::{Entry, FaultKind, FaultRule};
use emulator::{Emulator, Options};

/// The tests' schedule, as the config [`Env::write_config`] writes has it: every 2 seconds.
pub const EVERY_2_S: &str = "schedule = \"*/2 * * * * *\"";
/// The default schedule, every 15 minutes, for [`Env::edit_config`] to put in its place: steps
/// of `review2::time_passes` up to 20 minutes are then reconciles within the schedule (the
/// record of a hold stays continuous), and steps over 36 minutes are gaps it does not allow
/// (`schedule::tolerated_gap`).
pub const EVERY_15_MIN: &str = "schedule = \"0 */15 * * * *\"";

pub const DAEMON_SECRET: &str = "test-daemon-secret-Q~0123456789abcdefghij";

pub struct ClientApp {
    pub name: String,
    pub app_id: String,
    pub object_id: String,
}

pub struct Env {
    pub em: Emulator,
    pub dir: tempfile::TempDir,
    pub tenant: String,
    pub daemon_app_id: String,
    pub clients: Vec<ClientApp>,
    pub vault_url: String,
    pub config_path: PathBuf,
    pub admin_token: String,
    /// What was seeded, and the config it makes.
    pub seeded: Tenant,
}

/// What a test needs seeded.
pub struct Setup {
    pub clients: Vec<(&'static str, &'static str)>,
    /// Emulator settings. The default turns propagation delay and read lag off: these tests
    /// check the protocol's steps, not replication; the tests that are about replication turn
    /// it back on.
    pub settings: Settings,
    pub foreign_password: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            clients: vec![("app-one", "AzureADMyOrg")],
            settings: fast(),
            foreign_password: true,
        }
    }
}

pub fn fast() -> Settings {
    Settings {
        propagation_min_ms: 0,
        propagation_max_ms: 0,
        read_lag_ms: 0,
        ..Settings::default()
    }
}

impl Env {
    pub async fn new(setup: Setup) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let em = Emulator::start(Options::loopback_in(dir.path()))
            .await
            .expect("emulator starts");
        let kit = setup
            .clients
            .iter()
            .fold(
                TenantKit::new("rotator", DAEMON_SECRET).vault("kv-test"),
                |kit, (name, audience)| {
                    kit.client(KitClient {
                        audience: (*audience).into(),
                        portal_password: setup
                            .foreign_password
                            .then(|| "made in the portal".into()),
                        ..KitClient::new(*name, "kv-test")
                    })
                },
            )
            .settings(setup.settings);
        let tenant = kit.seed(&em).await.expect("seed");
        let clients = tenant
            .clients
            .iter()
            .map(|c| ClientApp {
                name: c.name.clone(),
                app_id: c.app_id.clone(),
                object_id: c.object_id.clone(),
            })
            .collect();
        let admin_token = "test-admin-token-0123456789".to_string();
        for (name, secret) in [
            ("daemon-secret", DAEMON_SECRET),
            ("admin-token", &admin_token),
        ] {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(name);
            std::fs::write(&path, secret).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let env = Env {
            vault_url: tenant.vaults["kv-test"].clone(),
            config_path: dir.path().join("config.toml"),
            em,
            dir,
            tenant: tenant.tenant_id.clone(),
            daemon_app_id: tenant.daemon_app_id.clone(),
            clients,
            admin_token,
            seeded: tenant,
        };
        env.write_config("", "");
        env
    }

    /// One client, `app-one`, on an application open to personal accounts (two passwords at
    /// most), with no foreign credential.
    pub async fn capped() -> Env {
        Env::new(Setup {
            clients: vec![("app-one", "AzureADandPersonalMicrosoftAccount")],
            foreign_password: false,
            ..Setup::default()
        })
        .await
    }

    /// Runs `rotate --force` and kills it while its publish at `target` (vault/secret) is held:
    /// the new credential is made, and its value never lands. Returns its key id.
    pub async fn killed_while_publishing(&self, client: &str, target: &str) -> String {
        let before: Vec<String> = self.passwords(client).into_iter().map(|p| p.0).collect();
        self.em.world().add_fault(emulator::world::FaultRule {
            operation: Operation::KeyvaultSetSecret,
            target: Some(target.into()),
            count: 1,
            kind: emulator::world::FaultKind::HoldBefore,
        });
        let config = self.config_path.to_string_lossy().to_string();
        let mut child = self
            .command(&["rotate", "--config", &config, client, "--force"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn rotate");
        assert!(
            eventually(Duration::from_secs(30), || !self
                .em
                .world()
                .held_calls()
                .is_empty())
            .await,
            "the publish was sent"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // The held write is never released: it never lands.
        self.em.world().clear_faults();
        self.passwords(client)
            .into_iter()
            .map(|p| p.0)
            .find(|k| !before.contains(k))
            .expect("the credential of the killed attempt")
    }

    pub fn client(&self, name: &str) -> &ClientApp {
        self.clients
            .iter()
            .find(|c| c.name == name)
            .expect("client")
    }

    /// Writes the config: `defaults` lines go under `[defaults]`, `extra` at the end.
    pub fn write_config(&self, defaults: &str, extra: &str) {
        self.write_config_with(defaults, "", extra);
    }

    /// [`Env::write_config`] with more `[daemon]` lines.
    pub fn write_config_with(&self, defaults: &str, daemon: &str, extra: &str) {
        let defaults = format!(
            "schedule = \"*/2 * * * * *\"\nsecret_lifetime = \"1h\"\nrenew_before = \"10m\"\noverlap = \"20m\"\nverify_timeout = \"30s\"\nverify_successes = 1\n{defaults}"
        );
        let mut text = self.seeded.config(&ConfigSpec {
            header: "",
            secret_file: "daemon-secret",
            azure: "",
            instance: "test",
            daemon,
            log: "",
            listen: "127.0.0.1:0",
            admin_token_file: Some("admin-token"),
            state_dir: "state",
            defaults: &defaults,
            secret_name: "{name}-secret",
        });
        text.push_str(extra);
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        // SECRET_ROTATOR_BIN lets a long run use a copy that later builds do not replace.
        let bin = std::env::var("SECRET_ROTATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secret-rotator").to_string());
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("NO_PROXY", "*")
            .env_remove("RUST_LOG")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy");
        cmd
    }

    /// Runs a command to completion (off the async runtime's threads).
    pub async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run secret-rotator"))
            .await
            .unwrap()
    }

    pub async fn rotate(&self, client: &str, extra: &[&str]) -> Output {
        let config = self.config_path.to_string_lossy().to_string();
        let mut args = vec!["rotate", "--config", config.as_str(), client];
        args.extend_from_slice(extra);
        self.cli(&args).await
    }

    /// Starts the daemon as a child process on a free port; returns it and its address.
    pub fn spawn_daemon(&self, extra_env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let text = std::fs::read_to_string(&self.config_path).unwrap().replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        // Whole or not at all: a CLI started by a test may be reading it.
        let tmp = self.config_path.with_extension("toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
        let log = self.dir.path().join(format!("daemon-{port}.log"));
        let mut cmd = self.command(&["run", "--config", self.config_path.to_str().unwrap()]);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(log.with_extension("err")).unwrap(),
            ))
            .spawn()
            .expect("spawn daemon");
        Daemon {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        }
    }

    pub fn journal(&self) -> Vec<Entry> {
        self.em.world().journal()
    }

    /// The state-changing calls that were not refused as concurrent (a 409 changes nothing and
    /// is retried), as `(operation, status, key id)`.
    pub fn writes(&self) -> Vec<(Operation, u16, Option<String>)> {
        self.all_writes()
            .into_iter()
            .filter(|w| w.1 != 409)
            .collect()
    }

    /// Every state-changing call, as `(operation, status, key id)`.
    pub fn all_writes(&self) -> Vec<(Operation, u16, Option<String>)> {
        self.journal()
            .into_iter()
            .filter(|e| {
                matches!(
                    e.operation,
                    Operation::GraphAddPassword
                        | Operation::GraphRemovePassword
                        | Operation::KeyvaultSetSecret
                        | Operation::KeyvaultUpdateSecret
                        | Operation::KeyvaultDeleteSecret
                )
            })
            .map(|e| (e.operation, e.status, e.key_id))
            .collect()
    }

    pub fn app(&self, name: &str) -> Application {
        let c = self.client(name);
        let state = self.em.world().state();
        state
            .applications
            .iter()
            .find(|a| a.app_id == c.app_id)
            .cloned()
            .expect("app")
    }

    /// Makes a credential look `by` older, as Entra would show it after that time: for tests
    /// of the age rules that should not sleep for minutes.
    pub fn age_credential(&self, client: &str, key_id: &str, by: time::Duration) {
        self.edit_password(client, key_id, |p| {
            p.start -= by;
            p.added -= by;
            p.start_text = p
                .start
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
        })
    }

    /// Writes a vault version by hand, as a person would: no tags.
    pub fn write_by_hand(&self, client: &str, value: &str, exp: Option<time::OffsetDateTime>) {
        let name = format!("{client}-secret");
        let mut state = self.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        vault
            .secrets
            .entry(name.clone())
            .or_insert_with(|| emulator::model::VaultSecret {
                name,
                versions: vec![],
            })
            .versions
            .push(emulator::model::SecretVersion {
                version: uuid::Uuid::new_v4().simple().to_string(),
                value: value.into(),
                content_type: None,
                tags: Default::default(),
                enabled: true,
                nbf: None,
                exp: exp.map(|e| e.unix_timestamp()),
                created: now,
                updated: now,
            });
    }

    /// Replaces `from` with `to` in the config file (which must contain it).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        assert!(text.contains(from), "the config has no {from:?}");
        std::fs::write(&self.config_path, text.replace(from, to)).unwrap();
    }

    /// POSTs a forced rotation to the daemon's admin API until it answers something other
    /// than "starting up" or "in flight"; returns the status and body.
    pub async fn admin_rotate(&self, daemon: &Daemon, query: &str) -> (u16, String) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/v1/clients/app-one/rotate{query}", daemon.addr);
        let mut answer = (0, String::new());
        for _ in 0..100 {
            if let Ok(r) = client
                .post(&url)
                .bearer_auth(&self.admin_token)
                .send()
                .await
            {
                answer = (r.status().as_u16(), r.text().await.unwrap_or_default());
                if answer.0 != 409 || !answer.1.contains("in flight") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        answer
    }

    /// Changes the versions of `client`'s vault secret in place (as time, a person or Azure
    /// would have changed them): the tests' one way into the emulator's vault.
    pub fn edit_versions<R>(
        &self,
        client: &str,
        f: impl FnOnce(&mut Vec<SecretVersion>) -> R,
    ) -> R {
        let mut state = self.em.world().state_mut();
        let secret = state
            .vaults
            .get_mut("kv-test")
            .expect("vault")
            .secrets
            .get_mut(&format!("{client}-secret").to_ascii_lowercase())
            .expect("secret");
        f(&mut secret.versions)
    }

    /// A person copies the value of `client`'s first version into a new version without tags,
    /// written `ago` ago (as when a value is pasted back by hand in the portal).
    pub fn copy_first_version_by_hand(&self, client: &str, ago: time::Duration) {
        self.edit_versions(client, |versions| {
            let mut copy = versions[0].clone();
            copy.version = "d".repeat(32);
            copy.tags.clear();
            copy.created = (time::OffsetDateTime::now_utc() - ago).unix_timestamp();
            copy.updated = copy.created;
            versions.push(copy);
        });
    }

    /// Changes one credential of `client`'s application in place.
    pub fn edit_password<R>(
        &self,
        client: &str,
        key_id: &str,
        f: impl FnOnce(&mut emulator::model::Password) -> R,
    ) -> R {
        self.edit_app(client, |app| {
            f(app
                .passwords
                .iter_mut()
                .find(|p| p.key_id == key_id)
                .expect("credential"))
        })
    }

    /// Changes `client`'s application in place.
    pub fn edit_app<R>(&self, client: &str, f: impl FnOnce(&mut Application) -> R) -> R {
        let app_id = self.client(client).app_id.clone();
        let mut state = self.em.world().state_mut();
        f(state
            .applications
            .iter_mut()
            .find(|a| a.app_id == app_id)
            .expect("app"))
    }

    /// On a two-password app (client `app-one`, `adopt = true`): both slots hold this
    /// installation's credentials, published in one second an hour ago (either may be the one
    /// consumers go back to), under a version written by hand `written_ago` ago and then
    /// disabled. Returns that version's id.
    pub async fn capped_under_a_disabled_hand_written_version(
        &self,
        written_ago: time::Duration,
    ) -> String {
        self.edit_config("overlap = \"20m\"", "overlap = \"20m\"\nadopt = true");
        for extra in [&[][..], &["--force"][..]] {
            let out = self.rotate("app-one", extra).await;
            assert!(out.status.success(), "{}", stderr(&out));
        }
        assert_eq!(self.passwords("app-one").len(), 2, "both slots taken");
        let hand = "e".repeat(32);
        self.edit_versions("app-one", |versions| {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for v in versions.iter_mut() {
                v.created = now - 3600;
                v.updated = v.created;
            }
            let mut by_hand = versions[1].clone();
            by_hand.version = hand.clone();
            by_hand.value = "pasted-by-hand".into();
            by_hand.tags.clear();
            by_hand.exp = None;
            by_hand.enabled = false;
            by_hand.created = now - written_ago.whole_seconds();
            by_hand.updated = by_hand.created;
            versions.push(by_hand);
        });
        hand
    }

    /// Makes every version of a client's vault secret look `by` older.
    pub fn age_versions(&self, client: &str, by: time::Duration) {
        self.edit_versions(client, |versions| {
            for v in versions {
                v.created -= by.whole_seconds();
                v.updated -= by.whole_seconds();
            }
        })
    }

    /// Key ids of the credentials removed, per the journal.
    pub fn removals(&self) -> Vec<String> {
        self.writes()
            .into_iter()
            .filter(|w| w.0 == Operation::GraphRemovePassword)
            .filter_map(|w| w.2)
            .collect()
    }

    /// Whether `key_id` is a live password of `client`'s application.
    pub fn live(&self, client: &str, key_id: &str) -> bool {
        self.passwords(client).iter().any(|(k, _)| k == key_id)
    }

    /// The key id the latest version of `client`'s secret names.
    pub fn published_key(&self, client: &str) -> String {
        self.versions(client).last().expect("a version").tags["key-id"].clone()
    }

    /// Soft-deletes `client`'s vault secret, as a person would: it moves to the vault's deleted
    /// secrets (recoverable or purgeable). Returns it as it was.
    pub fn soft_delete(&self, client: &str) -> emulator::model::VaultSecret {
        let name = format!("{client}-secret");
        let mut state = self.em.world().state_mut();
        let vault = state.vaults.get_mut("kv-test").unwrap();
        let secret = vault.secrets.remove(&name).expect("secret");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        vault.deleted.insert(
            name,
            emulator::model::DeletedSecret {
                secret: secret.clone(),
                deleted_date: now,
                scheduled_purge_date: now + 90 * 86_400,
            },
        );
        secret
    }

    /// Live passwords (key id, display name).
    pub fn passwords(&self, name: &str) -> Vec<(String, Option<String>)> {
        self.app(name)
            .passwords
            .into_iter()
            .filter(|p| p.removed.is_none())
            .map(|p| (p.key_id, p.display_name))
            .collect()
    }

    pub fn versions(&self, name: &str) -> Vec<SecretVersion> {
        let state = self.em.world().state();
        state.vaults["kv-test"]
            .secrets
            .get(&format!("{name}-secret").to_ascii_lowercase())
            .map(|s| s.versions.clone())
            .unwrap_or_default()
    }

    pub fn fault(&self, operation: Operation, count: u32, kind: FaultKind) {
        self.em.world().add_fault(FaultRule {
            operation,
            target: None,
            count,
            kind,
        });
    }

    pub fn status(status: u16) -> FaultKind {
        FaultKind::Status {
            status,
            code: None,
            retry_after: None,
        }
    }

    /// I1 and I3 for one client: the latest version's value is a live password of the app
    /// that can sign in (dates valid), its key-id tag names that password, and the foreign
    /// password seeded at start is untouched.
    pub fn assert_published_valid(&self, name: &str) {
        let app = self.app(name);
        let versions = self.versions(name);
        let latest = versions.last().expect("a published version");
        let key = latest.tags.get("key-id").expect("key-id tag");
        let password = app
            .passwords
            .iter()
            .find(|p| p.removed.is_none() && &p.key_id == key)
            .expect("key-id names a live credential");
        assert_eq!(
            password.secret_text, latest.value,
            "the published value is the credential's secret"
        );
        let now = time::OffsetDateTime::now_utc();
        assert!(
            password.start <= now && now < password.end,
            "the published credential is within its dates"
        );
        assert_eq!(
            latest.exp,
            Some(password.end.unix_timestamp()),
            "exp is the credential's end"
        );
        assert_eq!(
            latest.tags.get("managed-by").map(String::as_str),
            Some("secret-rotator")
        );
        assert_eq!(latest.tags.get("client-id"), Some(&app.app_id));
        let marker = password.display_name.clone().unwrap_or_default();
        assert_eq!(
            latest
                .tags
                .get("rotation-id")
                .map(|r| format!("secret-rotator:test:{name}:{r}")),
            Some(marker),
            "rotation-id matches the marker"
        );
    }

    /// The seeded foreign password is still there, unchanged.
    pub fn assert_foreign_untouched(&self, name: &str) {
        let app = self.app(name);
        let foreign: Vec<_> = app
            .passwords
            .iter()
            .filter(|p| p.display_name.as_deref() == Some("made in the portal"))
            .collect();
        assert_eq!(foreign.len(), 1, "the foreign credential is still there");
        assert!(foreign[0].removed.is_none());
    }
}

pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }
    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port for a daemon to listen on. Not one the kernel hands out for port 0: that range is
/// where every emulator listener and outgoing connection of the parallel tests takes its ports,
/// so one of them could take it between this check and the daemon's bind. Below it, only
/// another pick of this function can collide, and rarely.
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Every secret value the emulator holds or held (passwords, vault versions) and the daemon's
/// own secret.
pub fn minted(env: &Env) -> Vec<String> {
    let state = env.em.world().state();
    let mut values: Vec<String> = state
        .applications
        .iter()
        .flat_map(|a| a.passwords.iter().map(|p| p.secret_text.clone()))
        .collect();
    for v in state.vaults.values() {
        for s in v.secrets.values() {
            values.extend(s.versions.iter().map(|x| x.value.clone()));
        }
    }
    values.push(DAEMON_SECRET.to_string());
    values
}

impl Env {
    /// An HTTPS client that trusts only the emulator's CA.
    pub fn https(&self) -> reqwest::Client {
        let ca = std::fs::read(self.em.info().ca_file).unwrap();
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .no_proxy()
            .build()
            .unwrap()
    }

    /// Asks the emulator's Entra for a token with client credentials, as a consumer would.
    pub async fn token_request(
        &self,
        client_id: &str,
        secret: &str,
        scope: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let info = self.em.info();
        self.https()
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                info.authority_host, self.tenant
            ))
            .form(&[
                ("client_id", client_id),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
                ("scope", scope),
            ])
            .send()
            .await
    }

    /// The access token for `scope`; panics with Entra's answer when it refuses.
    pub async fn access_token(&self, client_id: &str, secret: &str, scope: &str) -> String {
        let answer: serde_json::Value = self
            .token_request(client_id, secret, scope)
            .await
            .expect("the token endpoint answers")
            .json()
            .await
            .expect("a JSON answer");
        match answer["access_token"].as_str() {
            Some(t) => t.to_string(),
            None => panic!("no token for {client_id} and {scope}: {answer}"),
        }
    }

    /// Whether `secret` signs in as `app_id` within the propagation window (a young secret
    /// fails now and then while it replicates).
    pub async fn signs_in(&self, app_id: &str, secret: &str) -> bool {
        for _ in 0..30 {
            if self
                .token_request(app_id, secret, "https://graph.microsoft.com/.default")
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    /// The object id of the application with `app_id`.
    pub fn app_object_id(&self, app_id: &str) -> String {
        let state = self.em.world().state();
        state
            .applications
            .iter()
            .find(|a| a.app_id == app_id)
            .map(|a| a.id.clone())
            .expect("app")
    }
}
