//! The one-shot commands: `check --online`, `plan`, `rotate`, `status`, `emulator`.

#[cfg(feature = "emulator")]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::build_context;
use crate::metrics::Metrics;
use crate::rotation::{self, Options};
use crate::status;
use crate::store::Store;

/// Prints one line to the terminal with its control characters escaped: values in it come from
/// Azure, vault tags and the store.
fn say(line: &str) {
    println!("{}", status::printable(line));
}

/// Signs in, then reads every client's application and vault secret, reporting what fails.
pub async fn check_online(config: Config) -> anyhow::Result<bool> {
    let path = config.path.clone();
    let store = Arc::new(Store::open(&config.state_dir)?);
    let ctx = build_context(config, store, Arc::new(Metrics::new()))?;
    let cancel = CancellationToken::new();
    if let Err(e) = ctx.azure.graph.sign_in().await {
        say(&format!(
            "{}: cannot sign in as {}: {e}",
            path.display(),
            ctx.config.azure.credential.identity()
        ));
        return Ok(false);
    }
    let mut ok = true;
    if ctx.config.inventory.enabled {
        match crate::azure::retry(Duration::from_secs(20), &cancel, || {
            ctx.azure.graph.list_applications(None)
        })
        .await
        {
            Ok(_) => say("inventory: OK (the tenant's applications can be listed)"),
            Err(e) if e.status == Some(403) => {
                ok = false;
                say(
                    "inventory: Graph refuses to list the tenant's applications: grant the daemon's identity Application.Read.All (application permission, with admin consent)",
                );
            }
            Err(e) => {
                ok = false;
                say(&format!(
                    "inventory: listing the tenant's applications: {e}"
                ));
            }
        }
    }
    for c in &ctx.config.clients {
        let app = crate::azure::retry(Duration::from_secs(20), &cancel, || {
            ctx.azure.graph.get_application(&c.app)
        })
        .await;
        let vault = crate::azure::retry(Duration::from_secs(20), &cancel, || {
            ctx.azure.vaults.versions(&c.key_vault_url, &c.secret_name)
        })
        .await;
        let mut problems = Vec::new();
        match &app {
            Ok(_) => {}
            Err(e) if e.status == Some(403) => problems.push(format!("Graph refuses to read the application ({}): grant Application.ReadWrite.OwnedBy and make the daemon an owner of it", c.app)),
            Err(e) if e.status == Some(404) => problems.push(format!("no application with {} is visible", c.app)),
            Err(e) => problems.push(format!("reading the application: {e}")),
        }
        match &vault {
            Ok(_) => {}
            Err(e) if e.status == Some(403) => problems.push(format!(
                "Key Vault {} refuses access: assign the daemon the Key Vault Secrets Officer role",
                c.key_vault_url
            )),
            Err(e) => problems.push(format!("reading the vault secret: {e}")),
        }
        if let Ok(a) = &app
            && c.policy.verify_url.is_none()
            && c.policy.verify_scope != ctx.config.azure.cloud.graph_scope()
            && let Some(problem) = rotation::api_check::scope_problem(&ctx, c, &a.app_id).await
        {
            problems.push(problem);
        }
        if let Ok(a) = &app
            && let Some(check) = rotation::api_check::with_published(&ctx, c, &a.app_id).await
            && !check.ok()
        {
            let line = check.describe(c, &a.app_id);
            if line.contains("AADSTS500011") {
                problems.push(format!(
                    "{line} (the resource of verify_scope {} has no service principal in this tenant)",
                    c.policy.verify_scope
                ));
            } else {
                problems.push(line);
            }
        }
        if problems.is_empty() {
            let state = match vault {
                Ok(Some(v)) => format!("{} version(s) in the vault", v.len()),
                _ => "no secret in the vault yet".into(),
            };
            say(&format!("{}: OK ({state})", c.name));
        } else {
            ok = false;
            for p in problems {
                say(&format!("{}: {p}", c.name));
            }
        }
    }
    Ok(ok)
}

/// How `inventory` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryOutput {
    Table,
    Json,
    Csv,
}

/// `secret-rotator inventory`: every credential of the tenant, soonest expiry first. A progress
/// line goes to stderr while a large tenant (more than one page) is read, when stderr is a
/// terminal.
pub async fn inventory(
    config: Config,
    expiring_within: Option<Duration>,
    output: InventoryOutput,
) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    let store = Arc::new(Store::open(&config.state_dir)?);
    let ctx = build_context(config, store, Arc::new(Metrics::new()))?;
    let cancel = CancellationToken::new();
    let terminal = std::io::stderr().is_terminal();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut progress = |apps: usize| {
        if !terminal {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos} applications read ({elapsed})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        b.set_position(apps as u64);
    };
    let read = crate::inventory::read(
        &ctx.azure.graph,
        &ctx.config.instance,
        &cancel,
        &mut |apps| {
            // One page is a small tenant: no bar for it.
            if apps >= crate::azure::graph::LIST_PAGE_SIZE {
                progress(apps)
            }
        },
    )
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let inv = match read {
        Ok(i) => i,
        Err(e) if e.status == Some(403) => anyhow::bail!(
            "Graph refused to list the tenant's applications: the daemon's identity needs Application.Read.All ({e})"
        ),
        Err(e) => anyhow::bail!("reading the tenant's applications: {e}"),
    };
    let chosen = crate::inventory::select(&inv.credentials, expiring_within, crate::clock::now());
    let expires = |c: &crate::inventory::TenantCredential| {
        c.expires
            .map(|e| status::rfc3339(e.unix_timestamp()))
            .unwrap_or_default()
    };
    match output {
        InventoryOutput::Json => println!("{}", serde_json::to_string_pretty(&chosen)?),
        InventoryOutput::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            w.write_record([
                "expires",
                "kind",
                "managed",
                "app",
                "app_id",
                "key_id",
                "display_name",
            ])?;
            for c in &chosen {
                // Names come from whoever may write an application: no control character
                // reaches a terminal (or a spreadsheet) as such.
                w.write_record([
                    expires(c).as_str(),
                    c.kind.as_str(),
                    if c.managed { "true" } else { "false" },
                    &status::printable(&c.app),
                    &c.app_id,
                    &c.key_id,
                    &status::printable(c.display_name.as_deref().unwrap_or("")),
                ])?;
            }
            w.flush()?;
        }
        InventoryOutput::Table => {
            let rows: Vec<Vec<String>> = chosen
                .iter()
                .map(|c| {
                    vec![
                        expires(c),
                        c.kind.as_str().to_string(),
                        if c.managed { "yes" } else { "no" }.to_string(),
                        c.app.clone(),
                        c.app_id.clone(),
                        c.key_id.clone(),
                        c.display_name.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                status::table(
                    &[
                        "EXPIRES", "KIND", "MANAGED", "APP", "APP ID", "KEY ID", "NAME"
                    ],
                    &rows
                )
            );
            eprintln!(
                "{} of {} credentials on {} applications",
                chosen.len(),
                inv.credentials.len(),
                inv.applications
            );
        }
    }
    Ok(true)
}

pub async fn plan(config: Config, json_output: bool) -> anyhow::Result<bool> {
    let store = Arc::new(Store::open(&config.state_dir)?);
    let ctx = build_context(config, store.clone(), Arc::new(Metrics::new()))?;
    let cancel = CancellationToken::new();
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let mut ok = true;
    // With [discovery], the clients it finds now are planned too, and the ones it refuses
    // are shown.
    let ctx = if ctx.config.discovery.is_some() {
        let found = crate::discovery::discover(&ctx)
            .await
            .map_err(|e| anyhow::anyhow!("discovery: {e}"))?;
        for r in &found.refused {
            ok = false;
            rows.push(vec![r.app.clone(), "refused".into(), r.reason.clone()]);
            items.push(json!({"client": r.app, "app_id": r.app_id, "action": "refused", "error": r.reason, "origin": "discovered"}));
        }
        let config = Config::load_with(&ctx.config.path, &found.toml)?;
        build_context(config, store, Arc::new(Metrics::new()))?
    } else {
        ctx
    };
    for c in &ctx.config.clients {
        match rotation::dry_run(&ctx, c, Options::default(), &cancel).await {
            Ok(mut p) => {
                if c.policy.verify_url.is_some()
                    && let Ok(app) = ctx.azure.graph.get_application(&c.app).await
                    && let Some(check) =
                        rotation::api_check::with_published(&ctx, c, &app.app_id).await
                    && !check.ok()
                {
                    p.notes.push(check.describe(c, &app.app_id));
                }
                let action = match (&p.blocked, &p.rotate) {
                    (Some(b), _) if b.is_failure() => "blocked",
                    (Some(_), _) => "wait",
                    (None, Some(_)) => "rotate",
                    (None, None) if !p.removals.is_empty() => "retire",
                    (None, None) => "none",
                };
                let mut why: Vec<String> = Vec::new();
                if let Some(b) = &p.blocked {
                    why.push(b.to_string());
                }
                if let Some(r) = &p.rotate {
                    why.push(r.to_string());
                }
                for r in &p.removals {
                    why.push(format!("remove {}: {}", r.key_id, r.reason));
                }
                why.extend(p.notes.iter().cloned());
                if why.is_empty() {
                    if let Some(at) = p.renew_at {
                        why.push(format!(
                            "not due until {}",
                            status::rfc3339(at.unix_timestamp())
                        ));
                    } else {
                        why.push("nothing to do".into());
                    }
                }
                rows.push(vec![c.name.to_string(), action.to_string(), why.join("; ")]);
                items.push(json!({
                    "client": &*c.name,
                    "action": action,
                    "rotate": p.rotate.as_ref().map(|r| r.to_string()),
                    "blocked": p.blocked.as_ref().map(|b| b.to_string()),
                    "removals": p.removals.iter().map(|r| json!({"key_id": r.key_id, "reason": r.reason.to_string()})).collect::<Vec<_>>(),
                    "published_key_id": p.published.as_ref().and_then(|x| x.key_id.clone()),
                    "expires_at": p.published.as_ref().and_then(|x| x.expires).map(|t| status::rfc3339(t.unix_timestamp())),
                    "renew_at": p.renew_at.map(|t| status::rfc3339(t.unix_timestamp())),
                    "notes": p.notes,
                    "origin": c.origin.to_string(),
                }));
            }
            Err(e) => {
                ok = false;
                rows.push(vec![c.name.to_string(), "error".into(), e.to_string()]);
                items.push(json!({"client": &*c.name, "action": "error", "error": e.to_string()}));
            }
        }
    }
    if json_output {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        print!("{}", status::table(&["CLIENT", "ACTION", "WHY"], &rows));
        if let Some(line) = status::budget(&ctx.budget, crate::clock::now()).line() {
            say(&line);
        }
    }
    Ok(ok)
}

pub async fn rotate(
    config: Config,
    client: &str,
    force: bool,
    revoke_previous: bool,
) -> anyhow::Result<bool> {
    let Some(c) = config.client(client).cloned() else {
        anyhow::bail!("{}: no client named '{client}'", config.path.display());
    };
    // Only the replica holding the lease writes; this command holds none (docs/ha.md).
    if config.ha.is_some() {
        anyhow::bail!(
            "{}: with [ha] only the leader writes: ask it with POST /v1/clients/{client}/rotate (a follower answers 503 naming the leader)",
            config.path.display()
        );
    }
    let store = Arc::new(Store::open(&config.state_dir)?);
    let ctx = build_context(config, store.clone(), Arc::new(Metrics::new()))?;
    // What a revocation revokes is what was published when it was asked, before any wait.
    let revoke_target = if revoke_previous {
        rotation::published_key_id(&ctx, &c).await
    } else {
        None
    };
    // A running daemon may be reconciling this client: wait for its lock rather than race it.
    let wait = c.policy.verify_timeout + Duration::from_secs(180);
    let Some(lock) = store.lock(client, wait).await? else {
        anyhow::bail!(
            "client '{client}' stayed locked by another process for {}",
            crate::clock::format_duration(wait)
        );
    };
    let cancel = CancellationToken::new();
    let interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.cancel();
        }
    });
    let result = rotation::reconcile(
        &ctx,
        &c,
        Options {
            force,
            revoke_previous,
            revoke_target,
            // The sign-in is the daemon's, every drift_interval; what needs none is checked.
            drift_check: false,
        },
        &cancel,
    )
    .await;
    drop(lock);
    match result {
        Ok(report) => {
            match &report.rotated {
                Some(r) => say(&format!(
                    "{client}: rotated: published version {} for credential {} (expires {})",
                    r.version,
                    r.key_id,
                    status::rfc3339(r.expires.unix_timestamp())
                )),
                None => match &report.plan.blocked {
                    Some(b) => say(&format!("{client}: not rotated: {b}")),
                    None if force => say(&format!("{client}: not rotated")),
                    None => say(&format!("{client}: no rotation needed")),
                },
            }
            for r in &report.removed {
                say(&format!(
                    "{client}: removed credential {} ({})",
                    r.key_id, r.reason
                ));
            }
            for w in &report.warnings {
                say(&format!("{client}: warning: {w}"));
            }
            // A revocation asked for and not done leaves a leaked secret valid: a failure.
            let is_revocation =
                |r: &rotation::plan::Removal| r.reason == rotation::plan::RemovalReason::Revoked;
            let wanted =
                report.plan.revoke.is_some() || report.plan.removals.iter().any(is_revocation);
            let revoked = !revoke_previous || !wanted || report.removed.iter().any(is_revocation);
            if revoke_previous && !revoked {
                say(&format!(
                    "{client}: the previous credential was not revoked"
                ));
            }
            Ok(report.gauges.ready && revoked)
        }
        Err(e) => anyhow::bail!("{client}: {e}"),
    }
}

/// `send-test-event`: one test event to each sink (or the one named), now.
pub async fn send_test_event(config: &Config, only: Option<&str>) -> anyhow::Result<bool> {
    let sinks: Vec<_> = config
        .events
        .iter()
        .filter(|s| only.is_none_or(|n| s.name == n))
        .collect();
    if sinks.is_empty() {
        match only {
            Some(n) => anyhow::bail!("{}: no event sink named '{n}'", config.path.display()),
            None => anyhow::bail!(
                "{}: no [[events]] sink is configured",
                config.path.display()
            ),
        }
    }
    let mut ok = true;
    for sink in sinks {
        match crate::events::deliver::send_test(config, sink).await {
            Ok(id) => say(&format!("{}: delivered test event {id}", sink.name)),
            Err(e) => {
                ok = false;
                say(&format!("{}: {e}", sink.name));
            }
        }
    }
    Ok(ok)
}

pub fn status(config: &Config, json_output: bool) -> anyhow::Result<bool> {
    let store = Store::open(&config.state_dir)?;
    let rows = status::collect(config, &store, &|_| false);
    let now = crate::clock::now();
    let budget = crate::rotation::budget::Budget::new(
        config.max_rotations_per_hour,
        store
            .rotations_since(now.unix_timestamp() - 3600)
            .unwrap_or_default(),
    );
    if json_output {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let dash = || "-".to_string();
                vec![
                    r.name.clone(),
                    r.published_key_id.clone().unwrap_or_else(dash),
                    r.expires_at.clone().unwrap_or_else(dash),
                    r.next_rotation_at.clone().unwrap_or_else(dash),
                    match (&r.last_result, &r.last_error) {
                        (Some(res), Some(err)) => format!("{res}: {err}"),
                        (Some(res), None) => res.clone(),
                        _ => "never reconciled".into(),
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            status::table(
                &[
                    "CLIENT",
                    "PUBLISHED KEY ID",
                    "EXPIRES",
                    "NEXT ROTATION",
                    "LAST RESULT"
                ],
                &table
            )
        );
        if let Some(line) = status::budget(&budget, now).line() {
            say(&line);
        }
        for sink in &config.events {
            let st = store.sink_state(
                &sink.name,
                sink.kind.name(),
                crate::events::deliver::FAILING_AFTER,
            );
            if st.pending > 0 {
                say(&format!(
                    "event sink {}: {} event(s) undelivered{}{}",
                    st.sink,
                    st.pending,
                    if st.failing { ", FAILING" } else { "" },
                    st.last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(true)
}

#[cfg(feature = "emulator")]
pub async fn emulator(
    listen: std::net::SocketAddr,
    state_dir: Option<PathBuf>,
    seed: Option<PathBuf>,
    ca: Option<(PathBuf, PathBuf)>,
) -> anyhow::Result<()> {
    // Without --state-dir the state is the run's own: a fresh private directory, removed at exit.
    let (state_dir, temporary) = match state_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("secret-rotator-emulator-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()
                .map_err(|e| anyhow::anyhow!("creating a temporary state dir: {e}"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let seed = match seed {
        Some(p) => Some(
            serde_json::from_slice(
                &std::fs::read(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    // A given CA takes the place of the generated one: the emulator keeps its CA in the state dir.
    if let Some((cert, key)) = ca {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        emulator::tls::install_ca(&state_dir, &read(&cert)?, &read(&key)?)?;
    }
    let em = emulator::Emulator::start(emulator::Options {
        listen,
        state_dir,
        seed,
    })
    .await?;
    println!("{}", serde_json::to_string(&em.info())?);
    wait_for_stop().await;
    em.shutdown();
    drop(temporary);
    Ok(())
}

#[cfg(feature = "emulator")]
pub async fn wait_for_stop() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
