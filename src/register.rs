//! `secret-rotator register`: from nothing to a rotating client in one command. It creates the
//! application (single tenant, no redirect URIs, tagged with this installation and the client's
//! name), its service principal, checks that the daemon owns it, optionally assigns it a role
//! through Azure Resource Manager, has the normal protocol make, verify and publish its first
//! secret (never printed), and writes the client.
//!
//! Every step first looks for what an earlier, interrupted run made: the tag finds a half-made
//! application (a marker in the state dir makes a rerun wait for Graph's read lag before it
//! would create a second one), the service principal is looked up by app id, a role
//! assignment's name is derived from what it assigns, and the first secret is a reconcile
//! (its store intent and credential marker clean up after a killed attempt, and a published
//! secret is not rotated again). A kill at any step and a rerun leave one application, one
//! service principal and one published secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use crate::azure::arm::{ArmClient, Assigned};
use crate::azure::directory::TaggedApp;
use crate::azure::{self, Class};
use crate::config::Config;
use crate::daemon::build_context;
use crate::metrics::Metrics;
use crate::rotation::{self, Context, Options};
use crate::status::printable;
use crate::store::Store;

/// What to register.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub name: String,
    pub vault: Option<String>,
    pub secret_name: Option<String>,
    /// `dicom`, `fhir` or a resource URI.
    pub api: Option<String>,
    /// Role name and ARM scope.
    pub assign_role: Option<(String, String)>,
    pub write_client: Option<PathBuf>,
}

/// The DICOM service's audience (every DICOM service shares it).
pub const DICOM_SCOPE: &str = "https://dicom.healthcareapis.azure.com/.default";
/// Azure API for FHIR's audience; a FHIR service in Azure Health Data Services has its own URL
/// as audience, given as `--api https://<workspace>-<fhir>.fhir.azurehealthcareapis.com`.
pub const FHIR_SCOPE: &str = "https://azurehealthcareapis.com/.default";

/// The verification scope `--api` names.
pub fn api_scope(api: &str) -> Result<String, String> {
    match api {
        "dicom" => Ok(DICOM_SCOPE.to_string()),
        "fhir" => Ok(FHIR_SCOPE.to_string()),
        uri if uri.starts_with("https://") || uri.starts_with("api://") => {
            let base = uri.trim_end_matches('/');
            if base.contains(char::is_whitespace) {
                return Err(format!("--api '{uri}' is not a resource URI"));
            }
            Ok(if base.ends_with("/.default") {
                base.to_string()
            } else {
                format!("{base}/.default")
            })
        }
        other => Err(format!(
            "--api '{other}' is not dicom, fhir or a resource URI (https://... or api://...)"
        )),
    }
}

/// The tag that finds this installation's application for `name`.
pub fn tag(instance: &str, name: &str) -> String {
    format!("secret-rotator-register:{instance}:{name}")
}

fn say(line: &str) {
    println!("{}", printable(line));
}

/// How long a rerun waits for a half-made application to show in Graph's reads.
const CREATE_LAG: Duration = Duration::from_secs(60);

fn marker(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("register-{name}.creating"))
}

pub async fn register(config: Config, req: Request) -> anyhow::Result<bool> {
    let name = req.name.clone();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        bail!("'{name}' is not a client name: 1-64 characters of A-Z, a-z, 0-9, _, . and -");
    }
    let existing = config.client(&name).cloned();
    let vault = match (&req.vault, &existing) {
        (Some(v), _) => v.clone(),
        (None, Some(c)) => c.key_vault_url.to_string(),
        (None, None) => match &config.discovery {
            Some(d) => d.key_vault_url.to_string(),
            None => bail!(
                "--vault is required (or [discovery] key_vault_url): the Key Vault the new client's secret is published to"
            ),
        },
    };
    let secret_name = match (&req.secret_name, &existing) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.secret_name.to_string(),
        (None, None) => format!("{name}-client-secret"),
    };
    let scope = match &req.api {
        Some(api) => Some(api_scope(api).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let source = std::fs::read_to_string(&config.path)
        .with_context(|| format!("reading {}", config.path.display()))?;
    let path = config.path.clone();
    let state_dir = config.state_dir.clone();
    let instance = config.instance.clone();
    let own_id = config.azure.credential.client_id().map(str::to_string);
    let store = Arc::new(Store::open(&state_dir)?);
    let metrics = Arc::new(Metrics::new());
    let ctx = build_context(config, store.clone(), metrics.clone())?;
    let cancel = CancellationToken::new();
    ctx.azure
        .graph
        .sign_in()
        .await
        .map_err(|e| anyhow::anyhow!("cannot sign in: {e}"))?;

    // 1. The application, found by its tag or created with it.
    let tag = tag(&instance, &name);
    let app = application(&ctx, &state_dir, &name, &tag, &cancel).await?;
    say(&format!(
        "{name}: application {} (app id {}, object id {})",
        app.display_name, app.app_id, app.object_id
    ));
    if let Some(c) = &existing
        && !matches!(&c.app, crate::config::AppRef::AppId(a) if a.to_string().eq_ignore_ascii_case(&app.app_id))
        && !matches!(&c.app, crate::config::AppRef::ObjectId(o) if o.to_string().eq_ignore_ascii_case(&app.object_id))
    {
        bail!(
            "{}: client '{name}' is configured for {}, not for the application registered under this name ({})",
            path.display(),
            c.app,
            app.app_id
        );
    }

    // 2. Owned by the daemon: an app created under Application.ReadWrite.OwnedBy is owned by
    // its creator, but this is checked, not assumed.
    let owners = azure::retry(Duration::from_secs(30), &cancel, || {
        ctx.azure.graph.owner_app_ids(&app.object_id)
    })
    .await
    .map_err(|e| anyhow::anyhow!("reading the owners of {}: {e}", app.app_id))?;
    match &own_id {
        Some(own) if owners.iter().any(|o| o.eq_ignore_ascii_case(own)) => {
            say(&format!("{name}: owned by the daemon ({own})"));
        }
        Some(own) => bail!(
            "application {} is not owned by the daemon ({own}): an owner must add it (az ad app owner add --id {} --owner-object-id <the daemon's service principal object id>)",
            app.app_id,
            app.app_id
        ),
        None => say(&format!(
            "{name}: the daemon's client id is not configured; its ownership is proven by the first secret"
        )),
    }

    // 3. The service principal.
    let sp = match azure::retry(Duration::from_secs(30), &cancel, || {
        ctx.azure.graph.service_principal(&app.app_id)
    })
    .await?
    {
        Some(id) => id,
        None => azure::retry(Duration::from_secs(60), &cancel, || {
            ctx.azure.graph.create_service_principal(&app.app_id)
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the service principal of {}: {e}", app.app_id))?,
    };
    say(&format!("{name}: service principal {sp}"));

    // 4. The role on the API, if asked: through ARM when the daemon may, else the command.
    let mut todo = Vec::new();
    if let Some((role, resource)) = &req.assign_role {
        let command = format!(
            "az role assignment create --assignee-object-id {sp} --assignee-principal-type ServicePrincipal --role \"{role}\" --scope {resource}"
        );
        let credential = azure::identity::credential(&ctx.config, &ctx.shared)?;
        let arm = ArmClient::new(
            ctx.shared.clone(),
            credential,
            &ctx.config.azure.resource_manager_endpoint,
            ctx.config.azure.cloud.resource_manager_scope(),
        );
        match azure::retry(Duration::from_secs(60), &cancel, || {
            arm.assign_role(resource, role, &sp)
        })
        .await
        {
            Ok(Assigned::Created) => say(&format!("{name}: assigned \"{role}\" at {resource}")),
            Ok(Assigned::Existed) => say(&format!(
                "{name}: \"{role}\" at {resource} was assigned already"
            )),
            Err(e) if e.status == Some(403) => {
                say(&format!(
                    "{name}: the daemon may not assign roles at {resource}; a person who may must run:\n  {command}"
                ));
                todo.push(command);
            }
            Err(e) => {
                say(&format!(
                    "{name}: the role assignment failed ({e}); assign it with:\n  {command}"
                ));
                todo.push(command);
            }
        }
    }

    // 5. The client, validated as any [[clients]] entry, against the configured ones.
    let client_toml = client_toml(&name, &app.app_id, &vault, &secret_name, scope.as_deref());
    let config = if existing.is_some() {
        Config::parse(&path, &source)
    } else {
        Config::parse(&path, &format!("{source}\n[[clients]]\n{client_toml}"))
    }
    .map_err(|e| anyhow::anyhow!("the new client is not valid with this config: {e}"))?;
    let ctx = build_context(config, store.clone(), metrics)?;
    let Some(client) = ctx.config.client(&name).cloned() else {
        bail!("client '{name}' is missing from the config it was added to");
    };

    // 6. The first secret, through the normal protocol: added, verified with the API's
    // audience, published, never printed. A published secret is not rotated again.
    let wait = client.policy.verify_timeout + Duration::from_secs(180);
    let Some(lock) = store.lock(&name, wait).await? else {
        bail!("client '{name}' stayed locked by another process");
    };
    let report = rotation::reconcile(&ctx, &client, Options::default(), &cancel).await;
    drop(lock);
    let report = report.map_err(|e| anyhow::anyhow!("{name}: the first secret: {e}"))?;
    match (&report.rotated, &report.plan.published) {
        (Some(r), _) => say(&format!(
            "{name}: published version {} of {} (credential {})",
            r.version, secret_name, r.key_id
        )),
        (None, Some(p)) => say(&format!(
            "{name}: a secret is published already (version {})",
            p.version
        )),
        (None, None) => {}
    }
    if !report.gauges.ready {
        bail!(
            "{name}: no working secret is published{}",
            report
                .plan
                .blocked
                .as_ref()
                .map(|b| format!(": {b}"))
                .unwrap_or_default()
        );
    }

    // 7. The client, as a file the daemon reads (clients_dir) or printed for the config.
    match &req.write_client {
        Some(dir) => {
            let file = dir.join(format!("{name}.toml"));
            write_atomically(
                &file,
                &format!(
                    "# Registered by `secret-rotator register` (application tag {tag}).\n{client_toml}"
                ),
            )?;
            say(&format!(
                "{name}: client written to {} (a daemon with clients_dir = {} loads it on SIGHUP)",
                file.display(),
                dir.display()
            ));
        }
        None if existing.is_none() => {
            say("add to the config:");
            println!("[[clients]]\n{client_toml}");
        }
        None => {}
    }
    let _ = std::fs::remove_file(marker(&state_dir, &name));
    for t in &todo {
        say(&format!("{name}: still to do: {t}"));
    }
    Ok(true)
}

/// Finds the one application with `tag`, or creates it.
async fn application(
    ctx: &Context,
    state_dir: &Path,
    name: &str,
    tag: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<TaggedApp> {
    let find = || async {
        azure::retry(Duration::from_secs(30), cancel, || {
            ctx.azure.graph.apps_by_tag(tag, true)
        })
        .await
        .map_err(|e| anyhow::anyhow!("looking for applications tagged {tag}: {e}"))
    };
    let one = |found: Vec<TaggedApp>| -> anyhow::Result<Option<TaggedApp>> {
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.into_iter().next()),
            n => bail!(
                "{n} applications carry the tag {tag} ({}): delete all but one",
                found
                    .iter()
                    .map(|a| a.app_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    };
    if let Some(app) = one(find().await?)? {
        return Ok(app);
    }
    // A create whose answer was lost (or a kill right after it) may not show in reads yet.
    let marker = marker(state_dir, name);
    if let Ok(meta) = std::fs::metadata(&marker)
        && meta.modified().ok().is_some_and(|m| {
            let made = time::OffsetDateTime::from(m);
            crate::clock::now() - made < time::Duration::try_from(CREATE_LAG).unwrap_or_default()
        })
    {
        let until = tokio::time::Instant::now() + CREATE_LAG;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Some(app) = one(find().await?)? {
                return Ok(app);
            }
        }
    }
    let _ = std::fs::remove_file(&marker);
    crate::files::write_new_private(&marker, b"")
        .with_context(|| format!("writing {}", marker.display()))?;
    match azure::retry(Duration::from_secs(60), cancel, || {
        ctx.azure.graph.create_application(name, tag)
    })
    .await
    {
        Ok(app) => Ok(app),
        Err(e) if e.class == Class::OutcomeUnknown => {
            // It may exist: look again, once the reads had time to catch up.
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Some(app) = one(find().await?)? {
                    return Ok(app);
                }
            }
            bail!("creating the application: {e}; run register again to resume")
        }
        Err(e) => bail!("creating the application: {e}"),
    }
}

/// The client's TOML, as one `[[clients]]` entry or one file of `clients_dir`.
pub fn client_toml(
    name: &str,
    app_id: &str,
    vault: &str,
    secret_name: &str,
    scope: Option<&str>,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = format!(
        "name = {}\napp_id = {}\nkey_vault_url = {}\nsecret_name = {}\n",
        q(name),
        q(app_id),
        q(vault.trim_end_matches('/')),
        q(secret_name)
    );
    if let Some(s) = scope {
        out.push_str(&format!("verify_scope = {}\n", q(s)));
    }
    out
}

fn write_atomically(file: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = file.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_map_to_their_audiences() {
        assert_eq!(api_scope("dicom").unwrap(), DICOM_SCOPE);
        assert_eq!(api_scope("fhir").unwrap(), FHIR_SCOPE);
        assert_eq!(
            api_scope("https://ws-fhir.fhir.azurehealthcareapis.com/").unwrap(),
            "https://ws-fhir.fhir.azurehealthcareapis.com/.default"
        );
        assert_eq!(api_scope("api://x/.default").unwrap(), "api://x/.default");
        assert!(api_scope("dicomm").unwrap_err().contains("not dicom, fhir"));
    }

    #[test]
    fn the_client_toml_quotes_its_values() {
        let t = client_toml("a", "b", "https://kv/", "s", Some(DICOM_SCOPE));
        assert_eq!(
            t,
            format!(
                "name = \"a\"\napp_id = \"b\"\nkey_vault_url = \"https://kv\"\nsecret_name = \"s\"\nverify_scope = \"{DICOM_SCOPE}\"\n"
            )
        );
    }
}
