//! An emulator of the Azure surfaces secret-rotator uses: the Entra ID token endpoint (and the
//! managed identity endpoint), Microsoft Graph applications with their password credentials, and
//! Key Vault secrets. It speaks HTTPS with a CA it generates, models the documented failure
//! behaviour (replication delay, read lag, concurrency violations, limits, throttling), keeps a
//! journal of every call, and takes injected faults through its control API.
//!
//! Layout: [`model`] is the data, [`world`] the shared state with the journal and fault
//! machinery, [`entra`], [`graph`] and [`keyvault`] the services, [`control`] the control API,
//! [`tls`] the listeners.
//!
//! Over 600 lines: the emulator's entry point (start, seed, persistence) and its tests (about
//! 210 lines).

// The emulator plays Azure, whose clock is its own: it reads the wall clock wherever Azure would,
// which the workspace's clippy.toml forbids to the daemon (only src/clock.rs may).
#![allow(clippy::disallowed_methods)]
// Handlers return early with the answer itself; boxing every `Response` buys nothing.
#![allow(clippy::result_large_err)]

pub mod arm;
pub mod control;
pub mod directory;
pub mod entra;
pub mod errors;
pub mod files;
pub mod graph;
pub mod keyvault;
pub mod kit;
pub mod model;
pub mod operation;
pub mod table;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod world;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::model::{Application, Password, Seed, State, Vault};
use crate::world::{World, lock};

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address of the first listener, on loopback (127.0.0.0/8 or ::1): anything else is
    /// refused, since the control API serves every secret without authentication. With port 0 every listener takes a free port; otherwise
    /// they take consecutive ports: authority, Graph, control, managed identity, Azure
    /// Resource Manager, then vaults and DICOM services from port + 10 in the order they are
    /// seeded.
    pub listen: SocketAddr,
    /// Holds `ca.pem`, the CA key and `state.json` (owner-only); state persists there across
    /// restarts. Created 0700 when missing; refused when others may write it.
    pub state_dir: PathBuf,
    pub seed: Option<Seed>,
}

impl Options {
    /// Every listener on a free loopback port, state under `dir/emulator`, nothing seeded: what
    /// tests and benchmarks start.
    pub fn loopback_in(dir: &std::path::Path) -> Options {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.join("emulator"),
            seed: None,
        }
    }
}

/// The one JSON line printed at start: where everything is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartInfo {
    pub authority_host: String,
    pub graph_endpoint: String,
    pub vaults: BTreeMap<String, String>,
    pub ca_file: String,
    pub control_url: String,
    /// The managed identity endpoint (App Service shape, plain HTTP) and its header value.
    pub identity_endpoint: String,
    pub identity_header: String,
    pub tenant_id: String,
    /// Azure Resource Manager (role definitions and assignments).
    #[serde(default)]
    pub arm_endpoint: String,
    #[serde(default)]
    pub subscription_id: String,
    /// DICOM service name → its DICOMweb base URL and ARM resource id.
    #[serde(default)]
    pub dicom_services: BTreeMap<String, DicomInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DicomInfo {
    pub url: String,
    pub resource_id: String,
}

/// What a seed created: ids and the secrets of the passwords it made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedReport {
    pub tenant_id: String,
    pub applications: Vec<SeededApp>,
    pub vaults: BTreeMap<String, String>,
    #[serde(default)]
    pub dicom_services: BTreeMap<String, DicomInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeededApp {
    pub display_name: String,
    pub id: String,
    pub app_id: String,
    /// The object id of its service principal.
    #[serde(default)]
    pub service_principal_id: String,
    pub passwords: Vec<SeededPassword>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SeededPassword {
    pub key_id: String,
    pub secret_text: String,
}

impl std::fmt::Debug for SeededPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededPassword")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A running emulator. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct Emulator {
    world: Arc<World>,
    inner: Arc<Inner>,
}

struct Inner {
    ip: IpAddr,
    base_port: u16,
    acceptor: tokio_rustls::TlsAcceptor,
    state_dir: PathBuf,
    info: Mutex<StartInfo>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    next_vault_port: Mutex<u16>,
}

impl Emulator {
    pub async fn start(options: Options) -> anyhow::Result<Emulator> {
        if !options.listen.ip().is_loopback() {
            bail!(
                "listen address {} is not loopback: the emulator's control API serves every secret it holds without authentication, so it listens on 127.0.0.0/8 or ::1 only",
                options.listen
            );
        }
        files::private_dir(&options.state_dir)?;
        let pki = tls::Pki::load_or_generate(Some(&options.state_dir))?;
        let state_file = options.state_dir.join("state.json");
        let (state, restored) = match std::fs::read(&state_file) {
            Ok(bytes) => (
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", state_file.display()))?,
                true,
            ),
            Err(_) => (
                State {
                    tenant_id: uuid::Uuid::new_v4().to_string(),
                    ..State::default()
                },
                false,
            ),
        };
        let mut state = state;
        directory::ensure_resources(&mut state);
        let world = World::new(state);
        let ip = options.listen.ip();
        let base = options.listen.port();
        let port = |offset: u16| if base == 0 { 0 } else { base + offset };
        let host = |addr: SocketAddr| match addr.ip() {
            IpAddr::V6(v6) => format!("[{v6}]:{}", addr.port()),
            IpAddr::V4(v4) => format!("{v4}:{}", addr.port()),
        };

        let authority = bind(ip, port(0)).await?;
        let graph = bind(ip, port(1)).await?;
        let control = bind(ip, port(2)).await?;
        let mi = bind(ip, port(3)).await?;
        let arm = bind(ip, port(4)).await?;
        let authority_host = format!("https://{}", host(authority.local_addr()?));
        let graph_endpoint = format!("https://{}", host(graph.local_addr()?));
        let control_url = format!("https://{}", host(control.local_addr()?));
        let identity_endpoint = format!("http://{}/msi/token", host(mi.local_addr()?));
        let arm_endpoint = format!("https://{}", host(arm.local_addr()?));
        {
            let mut urls = lock(&world.urls);
            urls.authority_host = authority_host.clone();
            urls.graph_endpoint = graph_endpoint.clone();
        }
        let ca_file = options.state_dir.join("ca.pem");
        files::replace(&ca_file, pki.ca_pem.as_bytes(), 0o644)?;
        let tenant_id = world.state().tenant_id.clone();
        let subscription_id = world.state().subscription_id.clone();
        let info = StartInfo {
            authority_host,
            graph_endpoint,
            vaults: BTreeMap::new(),
            ca_file: ca_file.display().to_string(),
            control_url,
            identity_endpoint,
            identity_header: world.identity_header.clone(),
            tenant_id,
            arm_endpoint,
            subscription_id,
            dicom_services: BTreeMap::new(),
        };
        let emulator = Emulator {
            world: world.clone(),
            inner: Arc::new(Inner {
                ip,
                base_port: base,
                acceptor: pki.acceptor.clone(),
                state_dir: options.state_dir.clone(),
                info: Mutex::new(info),
                tasks: Mutex::new(Vec::new()),
                next_vault_port: Mutex::new(if base == 0 { 0 } else { base + 10 }),
            }),
        };
        let tls = Some(pki.acceptor.clone());
        emulator.spawn(tls::serve(
            authority,
            entra::router(world.clone()),
            tls.clone(),
        ));
        emulator.spawn(tls::serve(graph, graph::router(world.clone()), tls.clone()));
        emulator.spawn(tls::serve(arm, arm::router(world.clone()), tls.clone()));
        emulator.spawn(tls::serve(control, control::router(emulator.clone()), tls));
        emulator.spawn(tls::serve(
            mi,
            entra::managed_identity_router(world.clone()),
            None,
        ));
        let vaults: Vec<String> = world.state().vaults.keys().cloned().collect();
        for name in vaults {
            emulator.open_vault(&name).await?;
        }
        let dicoms: Vec<String> = world.state().dicom_services.keys().cloned().collect();
        for name in dicoms {
            emulator.open_dicom(&name).await?;
        }
        emulator.spawn(persist(world.clone(), state_file));
        // A restart on a kept state dir resumes that tenant; the seed made it the first time.
        if let Some(seed) = options.seed
            && !restored
        {
            emulator.seed(seed).await?;
        }
        Ok(emulator)
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.inner.tasks).push(tokio::spawn(f));
    }

    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    pub fn info(&self) -> StartInfo {
        lock(&self.inner.info).clone()
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// Stops every listener and writes the state one last time (after a write in progress).
    pub fn shutdown(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        let _ = write_state(&self.world, &self.inner.state_dir.join("state.json"));
    }

    fn next_port(&self) -> u16 {
        let mut next = lock(&self.inner.next_vault_port);
        let p = *next;
        if p != 0 {
            *next += 1;
        }
        p
    }

    async fn open_dicom(&self, name: &str) -> anyhow::Result<DicomInfo> {
        if let Some(info) = lock(&self.inner.info).dicom_services.get(name) {
            return Ok(info.clone());
        }
        let listener = bind(self.inner.ip, self.next_port()).await?;
        let addr = listener.local_addr()?;
        let url = match addr.ip() {
            IpAddr::V6(v6) => format!("https://[{v6}]:{}", addr.port()),
            IpAddr::V4(v4) => format!("https://{v4}:{}", addr.port()),
        };
        let resource_id = self
            .world
            .state()
            .dicom_services
            .get(name)
            .map(|d| d.resource_id.clone())
            .unwrap_or_default();
        let info = DicomInfo { url, resource_id };
        lock(&self.inner.info)
            .dicom_services
            .insert(name.to_string(), info.clone());
        self.spawn(tls::serve(
            listener,
            arm::dicom_router(self.world.clone(), name.to_string()),
            Some(self.inner.acceptor.clone()),
        ));
        Ok(info)
    }

    async fn open_vault(&self, name: &str) -> anyhow::Result<String> {
        if let Some(url) = lock(&self.inner.info).vaults.get(name) {
            return Ok(url.clone());
        }
        let port = self.next_port();
        let listener = bind(self.inner.ip, port).await?;
        let addr = listener.local_addr()?;
        let url = match addr.ip() {
            IpAddr::V6(v6) => format!("https://[{v6}]:{}", addr.port()),
            IpAddr::V4(v4) => format!("https://{v4}:{}", addr.port()),
        };
        lock(&self.world.urls)
            .vaults
            .insert(name.to_string(), url.clone());
        lock(&self.inner.info)
            .vaults
            .insert(name.to_string(), url.clone());
        self.spawn(tls::serve(
            listener,
            keyvault::router(self.world.clone(), name.to_string()),
            Some(self.inner.acceptor.clone()),
        ));
        let _ = self.inner.base_port;
        Ok(url)
    }

    /// Adds applications and vaults (and sets the tenant and settings when given).
    pub async fn seed(&self, seed: Seed) -> anyhow::Result<SeedReport> {
        let now = OffsetDateTime::now_utc();
        let mut report = SeedReport {
            tenant_id: String::new(),
            applications: Vec::new(),
            vaults: BTreeMap::new(),
            dicom_services: BTreeMap::new(),
        };
        {
            let mut state = self.world.state_mut();
            if let Some(t) = &seed.tenant_id {
                if uuid::Uuid::parse_str(t).is_err() {
                    bail!("tenant_id '{t}' is not a GUID");
                }
                state.tenant_id = t.clone();
            }
            if let Some(s) = &seed.settings {
                state.settings = s.clone();
            }
            for a in &seed.applications {
                let id =
                    a.id.clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let app_id = a
                    .app_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                // Generated ids are fresh; only given ones can collide (and checking each is
                // a scan of the tenant, which a seed of tens of thousands cannot afford).
                if (a.id.is_some() && state.app_by_object_id(&id).is_some())
                    || (a.app_id.is_some() && state.app_by_app_id(&app_id).is_some())
                {
                    bail!("application '{}' ({app_id}) already exists", a.display_name);
                }
                let mut seeded = SeededApp {
                    display_name: a.display_name.clone(),
                    id: id.clone(),
                    app_id: app_id.clone(),
                    service_principal_id: String::new(),
                    passwords: Vec::new(),
                };
                let mut passwords = Vec::new();
                for p in &a.password_credentials {
                    let secret = p.secret_text.clone().unwrap_or_else(graph::mint_secret);
                    if secret.len() < 3 {
                        bail!("a seeded secret_text must have at least 3 characters");
                    }
                    let start = p.start_date_time.unwrap_or(now);
                    let end = p.end_date_time.unwrap_or(start + time::Duration::days(730));
                    let key_id = uuid::Uuid::new_v4().to_string();
                    seeded.passwords.push(SeededPassword {
                        key_id: key_id.clone(),
                        secret_text: secret.clone(),
                    });
                    // Seeded credentials are as old as their start, unless they model a
                    // secret created just now.
                    let added = if p.propagating {
                        now
                    } else {
                        start.min(now - time::Duration::hours(1))
                    };
                    passwords.push(Password::new(
                        key_id,
                        p.display_name.clone(),
                        secret,
                        start,
                        end,
                        added,
                    ));
                }
                let key_credentials = a
                    .key_credentials
                    .iter()
                    .map(|k| {
                        let start = k.start_date_time.unwrap_or(now);
                        let end = k.end_date_time.unwrap_or(start + time::Duration::days(365));
                        graph::key_credential(k.display_name.clone(), start, end)
                    })
                    .collect();
                let app = Application {
                    id,
                    app_id,
                    display_name: a.display_name.clone(),
                    sign_in_audience: a.sign_in_audience.clone(),
                    owners: a.owners.clone(),
                    graph_roles: a.graph_roles.clone(),
                    passwords,
                    key_credentials,
                    federated_credentials: a.federated_credentials.clone(),
                    managed_identity: a.managed_identity,
                    disabled: a.disabled,
                    // Seeded applications exist from before the run: no read lags them.
                    created: now - time::Duration::hours(1),
                    last_write: None,
                    tags: a.tags.clone(),
                    redirect_uris: Vec::new(),
                };
                // A seeded application is one that signs in: it has its service principal.
                let sp = directory::principal_for(&app);
                seeded.service_principal_id = sp.id.clone();
                state.service_principals.push(sp);
                state.applications.push(app);
                report.applications.push(seeded);
            }
            for v in &seed.vaults {
                if v.name.len() < 3
                    || v.name.len() > 24
                    || !v
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    bail!(
                        "vault name '{}' must be 3-24 characters of 0-9, a-z, A-Z and -",
                        v.name
                    );
                }
                let vault = state.vaults.entry(v.name.clone()).or_insert_with(|| Vault {
                    name: v.name.clone(),
                    access: BTreeMap::new(),
                    secrets: BTreeMap::new(),
                    deleted: BTreeMap::new(),
                    written_ms: BTreeMap::new(),
                });
                vault.access.extend(v.access.clone());
            }
            let subscription = state.subscription_id.clone();
            for d in &seed.dicom_services {
                if d.name.len() < 3
                    || d.name.len() > 24
                    || !d
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    bail!(
                        "DICOM service name '{}' must be 3-24 characters of a-z and 0-9",
                        d.name
                    );
                }
                state
                    .dicom_services
                    .entry(d.name.clone())
                    .or_insert_with(|| model::DicomService {
                        name: d.name.clone(),
                        resource_id: arm::dicom_resource_id(&subscription, &d.name),
                    });
            }
            for r in &seed.role_assignments {
                let Some(principal) = state.sp_by_app_id(&r.principal).map(|s| s.id.clone()) else {
                    bail!(
                        "role assignment: no service principal for app id '{}'",
                        r.principal
                    );
                };
                let Some(definition) = arm::role_definition_id(&subscription, &r.role) else {
                    bail!("role assignment: unknown role '{}'", r.role);
                };
                let scope = if r.scope == "subscription" {
                    format!("/subscriptions/{subscription}")
                } else if let Some(name) = r.scope.strip_prefix("dicom:") {
                    match state.dicom_services.get(name) {
                        Some(d) => d.resource_id.clone(),
                        None => bail!("role assignment: no DICOM service '{name}'"),
                    }
                } else if r.scope.starts_with("/subscriptions/") {
                    r.scope.clone()
                } else {
                    bail!(
                        "role assignment scope '{}' must be 'subscription', 'dicom:<name>' or '/subscriptions/...'",
                        r.scope
                    );
                };
                state.role_assignments.push(model::RoleAssignment {
                    name: uuid::Uuid::new_v4().to_string(),
                    scope,
                    role_definition_id: definition,
                    principal_id: principal,
                    principal_type: "ServicePrincipal".into(),
                    created: graph::graph_time(now),
                });
            }
            report.tenant_id = state.tenant_id.clone();
        }
        lock(&self.inner.info).tenant_id = report.tenant_id.clone();
        for v in &seed.vaults {
            let url = self.open_vault(&v.name).await?;
            report.vaults.insert(v.name.clone(), url);
        }
        for d in &seed.dicom_services {
            let info = self.open_dicom(&d.name).await?;
            report.dicom_services.insert(d.name.clone(), info);
        }
        Ok(report)
    }
}

async fn bind(ip: IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("binding {ip}:{port}"))
}

/// Writes the state to `path` through [`files::replace`] and says how long that took.
///
/// Serialised under the world's lock, written outside it. Copying the state under the lock to
/// serialise the copy outside was measured and refused: at 100,000 applications (207 MB) the
/// copy took 240-540 ms, as long as serialising (280-320 ms), and dropping it 80-210 ms more.
/// Writes go one at a time (`World::persisting`), each serialising the state after the previous
/// one finished, so a later write never holds an older state than an earlier one.
fn write_state(world: &World, path: &Path) -> anyhow::Result<Duration> {
    let _one_at_a_time = lock(&world.persisting);
    let started = std::time::Instant::now();
    let bytes = serde_json::to_vec(&*world.state())?;
    files::replace(path, &bytes, 0o600)?;
    Ok(started.elapsed())
}

/// At most this share of the time goes to writing the state.
const PERSIST_SHARE: u32 = 10;

/// Writes the state when it changed: a second after the last write, or nine times that write's
/// duration after it when that is longer (156 MB at 100,000 applications), so that persisting
/// takes at most a tenth of the time however large the tenant. The write runs on a blocking
/// thread, not on the runtime serving requests.
async fn persist(world: Arc<World>, path: PathBuf) {
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::time::sleep(pause).await;
        pause = Duration::from_secs(1);
        if !world.take_dirty() {
            continue;
        }
        let (w, p) = (world.clone(), path.clone());
        match tokio::task::spawn_blocking(move || write_state(&w, &p)).await {
            Ok(Ok(took)) => pause = pause.max(took * (PERSIST_SHARE - 1)),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not persist emulator state"),
            Err(e) => tracing::warn!(error = %e, "persisting emulator state failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SeedApplication, SeedVault};

    #[tokio::test]
    async fn state_and_ca_persist_across_a_restart_on_the_same_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let options = |seed| Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.path().to_path_buf(),
            seed,
        };
        let seed = Seed {
            tenant_id: None,
            applications: vec![SeedApplication::new("kept")],
            vaults: vec![SeedVault {
                name: "kept-kv".into(),
                access: BTreeMap::new(),
            }],
            settings: None,
            ..Default::default()
        };
        let first = Emulator::start(options(Some(seed.clone()))).await.unwrap();
        let tenant = first.info().tenant_id;
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        first.shutdown();
        let second = Emulator::start(options(Some(seed))).await.unwrap();
        assert_eq!(second.info().tenant_id, tenant);
        assert!(
            second.info().vaults.contains_key("kept-kv"),
            "the vault listens again"
        );
        assert_eq!(
            second.world().state().applications.len(),
            1,
            "restored, not seeded twice"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
            ca,
            "the CA is kept"
        );
        second.shutdown();
    }

    #[tokio::test]
    async fn applications_are_found_by_id_in_any_case_as_they_come_and_go_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let options = |seed| Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.path().to_path_buf(),
            seed,
        };
        let app = |n: usize| SeedApplication {
            id: Some(format!("0000000{n}-AAAA-4AAA-8AAA-00000000000{n}")),
            app_id: Some(format!("1111111{n}-BBBB-4BBB-8BBB-00000000000{n}")),
            ..SeedApplication::new(format!("app{n}"))
        };
        let seed = Seed {
            applications: (0..3).map(app).collect(),
            ..Default::default()
        };
        let first = Emulator::start(options(Some(seed))).await.unwrap();
        first.shutdown();
        let second = Emulator::start(options(None)).await.unwrap();
        let found = |n: usize| {
            let state = second.world().state();
            let by_id = state
                .app_by_object_id(&format!("0000000{n}-aaaa-4aaa-8aaa-00000000000{n}"))
                .map(|i| state.applications[i].display_name.clone());
            let by_app_id = state
                .app_by_app_id(&format!("1111111{n}-bbbb-4bbb-8bbb-00000000000{n}"))
                .map(|i| state.applications[i].display_name.clone());
            let sp = state
                .sp_by_app_id(&format!("1111111{n}-bbbb-4bbb-8bbb-00000000000{n}"))
                .map(|s| s.display_name.clone());
            assert_eq!(by_id, by_app_id, "app{n}: by object id and by app id");
            assert_eq!(
                by_id, sp,
                "app{n}: the application and its service principal"
            );
            by_id
        };
        for n in 0..3 {
            assert_eq!(found(n).as_deref(), Some(&*format!("app{n}")), "restored");
        }
        assert!(
            second
                .world()
                .state()
                .sp_for_resource("HTTPS://VAULT.AZURE.NET/")
                .is_some(),
            "the resource principals are found by name after a restart"
        );
        // Added after the start (the index follows a push), then one removed (the rows after it
        // shift).
        second
            .seed(Seed {
                applications: vec![app(3)],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found(3).as_deref(), Some("app3"));
        {
            let mut state = second.world().state_mut();
            let gone = "11111110-BBBB-4BBB-8BBB-000000000000";
            let i = state.app_by_app_id(gone).unwrap();
            state.applications.remove(i);
            let j = state
                .service_principals
                .position(crate::table::Key::AppId, gone)
                .unwrap();
            state.service_principals.remove(j);
        }
        assert_eq!(found(0), None, "removed");
        for n in 1..4 {
            assert_eq!(
                found(n).as_deref(),
                Some(&*format!("app{n}")),
                "after a removal"
            );
        }
        second.shutdown();
    }

    #[tokio::test]
    async fn the_state_is_written_while_the_emulator_runs_not_only_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let em = Emulator::start(Options::loopback_in(dir.path()))
            .await
            .unwrap();
        em.seed(Seed {
            applications: vec![SeedApplication::new("written-while-running")],
            ..Default::default()
        })
        .await
        .unwrap();
        let path = em.state_dir().join("state.json");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let written = std::fs::read_to_string(&path).unwrap_or_default();
            if written.contains("written-while-running") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "state.json holds no seeded application 10 s after the seed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        em.shutdown();
    }

    #[tokio::test]
    async fn state_json_is_owner_only_and_the_listen_address_must_be_loopback() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let refused = Emulator::start(Options {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            state_dir: dir.path().join("open"),
            seed: None,
        })
        .await
        .err()
        .expect("0.0.0.0 is refused")
        .to_string();
        assert!(refused.contains("not loopback"), "{refused}");

        let em = Emulator::start(Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.path().join("em"),
            seed: Some(Seed {
                tenant_id: None,
                applications: vec![SeedApplication::new("kept")],
                vaults: vec![],
                settings: None,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        em.shutdown();
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join("em").join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("."), 0o700);
        assert_eq!(mode("state.json"), 0o600);
        assert_eq!(mode("ca-key.pem"), 0o600);
    }
}
