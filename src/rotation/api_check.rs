//! `verify_url`: proof that a secret does what its consumer needs, not only that it signs in.
//! After a new secret got its tokens, one `GET verify_url` with a token for `verify_scope`
//! must answer 2xx. A 401 or 403 means the application lacks its role on the API (or the scope
//! names another API): that is a property of the application, shared by every secret it has,
//! so it never stops a verified secret from being published (docs/decisions.md,
//! "verify_url"). It is reported: the log, `secret_rotator_verify_url_ok`, `plan` and
//! `check --online`, with the role and scope to grant.

use secrecy::SecretString;

use super::Context;
use crate::azure::entra::{ApiAnswer, VerifyFailure};
use crate::config::Client;

/// How the call to `verify_url` went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCheck {
    /// 2xx.
    Allowed(u16),
    /// 401 or 403: the application lacks its role.
    Denied(u16),
    /// Another status, no answer, or no token: says nothing about the role.
    Failed(String),
}

impl ApiCheck {
    pub fn ok(&self) -> bool {
        matches!(self, ApiCheck::Allowed(_))
    }

    /// One line for the log, `plan` and `check --online`.
    pub fn describe(&self, client: &Client, app_id: &str) -> String {
        let url = client
            .policy
            .verify_url
            .as_ref()
            .map(|u| u.as_str())
            .unwrap_or_default();
        match self {
            ApiCheck::Allowed(s) => format!("verify_url answered {s}"),
            ApiCheck::Denied(s) => format!(
                "verify_url {url} answered {s} to the app's token: the application lacks its role on the API; {}",
                grant(&client.policy.verify_scope, app_id)
            ),
            ApiCheck::Failed(why) => format!("verify_url {url} could not be checked: {why}"),
        }
    }
}

/// What to grant, for the APIs whose roles are known.
pub fn grant(scope: &str, app_id: &str) -> String {
    let resource = scope
        .trim_end_matches("/.default")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    if resource == "https://dicom.healthcareapis.azure.com" {
        format!(
            "grant it \"DICOM Data Owner\" (or \"DICOM Data Reader\") on the DICOM service: az role assignment create --assignee {app_id} --role \"DICOM Data Owner\" --scope <the DICOM service's resource id>"
        )
    } else if resource.ends_with(".fhir.azurehealthcareapis.com")
        || resource == "https://azurehealthcareapis.com"
    {
        format!(
            "grant it \"FHIR Data Contributor\" (or \"FHIR Data Reader\") on the FHIR service: az role assignment create --assignee {app_id} --role \"FHIR Data Contributor\" --scope <the FHIR service's resource id>"
        )
    } else {
        format!(
            "grant application {app_id} its role on {resource} (an app role or an Azure RBAC role, as the API expects)"
        )
    }
}

/// Requests a token with `secret` for the client's scope and calls `verify_url` with it;
/// `None` when the client has no `verify_url`.
pub async fn run(
    ctx: &Context,
    client: &Client,
    app_id: &str,
    secret: &SecretString,
) -> Option<ApiCheck> {
    let url = client.policy.verify_url.as_ref()?;
    let token = match ctx
        .azure
        .entra
        .token(app_id, secret, &client.policy.verify_scope)
        .await
    {
        Ok(t) => t,
        Err(VerifyFailure::NotYetValid) => {
            return Some(ApiCheck::Failed("the secret did not sign in".into()));
        }
        Err(VerifyFailure::Transient(e) | VerifyFailure::Rejected(e)) => {
            return Some(ApiCheck::Failed(format!("no token: {e}")));
        }
    };
    let answer = ctx.azure.entra.api_get(url, &token).await;
    drop(token);
    Some(match answer {
        ApiAnswer::Status(s) if (200..300).contains(&s) => ApiCheck::Allowed(s),
        ApiAnswer::Status(s @ (401 | 403)) => ApiCheck::Denied(s),
        ApiAnswer::Status(s) => ApiCheck::Failed(format!("HTTP {s}")),
        ApiAnswer::Unreachable(why) => ApiCheck::Failed(why),
    })
}

/// After a rotation verified its secret: checks the API, reports the outcome, and never
/// fails the rotation.
pub async fn after_verify(ctx: &Context, client: &Client, app_id: &str, secret: &SecretString) {
    let Some(check) = run(ctx, client, app_id, secret).await else {
        return;
    };
    ctx.metrics.set_verify_url_ok(&client.name, check.ok());
    match &check {
        ApiCheck::Allowed(_) => {
            tracing::info!(client = %client.name, "{}", check.describe(client, app_id))
        }
        _ => {
            tracing::warn!(client = %client.name, event = "verify_url_failed", "{}; the new secret signs in and is published all the same", check.describe(client, app_id))
        }
    }
}

/// With the published secret (for `plan` and `check --online`): `None` without `verify_url`
/// or without a published value to try.
pub async fn with_published(ctx: &Context, client: &Client, app_id: &str) -> Option<ApiCheck> {
    client.policy.verify_url.as_ref()?;
    let value = match ctx
        .azure
        .vaults
        .get(&client.key_vault_url, &client.secret_name, None)
        .await
    {
        Ok(v) => v,
        Err(e) if e.status == Some(404) => return None,
        Err(e) => {
            return Some(ApiCheck::Failed(format!(
                "reading the published secret: {e}"
            )));
        }
    };
    let check = run(ctx, client, app_id, &value.value).await;
    drop(value);
    if let Some(c) = &check {
        ctx.metrics.set_verify_url_ok(&client.name, c.ok());
    }
    check
}

/// For `check --online`: whether the resource `verify_scope` names has a service principal in
/// the tenant, asked with the published secret (AADSTS500011 says it has none). `None` when
/// it does, or when there is nothing published to ask with.
pub async fn scope_problem(ctx: &Context, client: &Client, app_id: &str) -> Option<String> {
    let value = ctx
        .azure
        .vaults
        .get(&client.key_vault_url, &client.secret_name, None)
        .await
        .ok()?;
    let answer = ctx
        .azure
        .entra
        .verify(app_id, &value.value, &client.policy.verify_scope)
        .await;
    drop(value);
    match answer {
        Err(VerifyFailure::Rejected(e)) if e.code.as_deref() == Some("AADSTS500011") => {
            Some(format!(
                "the resource of verify_scope {} has no service principal in this tenant (AADSTS500011): check the scope, or add the API's service principal",
                client.policy.verify_scope
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_names_the_role_for_dicom_and_fhir() {
        let dicom = grant("https://dicom.healthcareapis.azure.com/.default", "a1");
        assert!(dicom.contains("DICOM Data Owner") && dicom.contains("--assignee a1"));
        let fhir = grant(
            "https://ws-fhir.fhir.azurehealthcareapis.com/.default",
            "a1",
        );
        assert!(fhir.contains("FHIR Data Contributor"));
        assert!(grant("api://x/.default", "a1").contains("api://x"));
    }
}
