//! Azure Resource Manager, for one thing: a role assignment for a new client's service
//! principal (`register --assign-role`), api-version 2022-04-01.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use serde::Deserialize;
use serde_json::json;

use super::{AzureHttp, Class, Error, Timer, class_of_status};

const SERVICE: &str = "arm";
const API_VERSION: &str = "2022-04-01";

pub struct ArmClient {
    shared: AzureHttp,
    credential: Arc<dyn TokenCredential>,
    base: String,
    scope: String,
}

/// How an assignment ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Assigned {
    Created,
    /// The same role for the same principal at the same scope was there already.
    Existed,
}

#[derive(Deserialize)]
struct RoleDefinitions {
    value: Vec<RoleDefinition>,
}

#[derive(Deserialize)]
struct RoleDefinition {
    id: String,
}

#[derive(Deserialize)]
struct ArmError {
    error: ArmErrorBody,
}

#[derive(Deserialize)]
struct ArmErrorBody {
    code: Option<String>,
    message: Option<String>,
}

impl ArmClient {
    pub fn new(
        shared: AzureHttp,
        credential: Arc<dyn TokenCredential>,
        endpoint: &url::Url,
        scope: &str,
    ) -> ArmClient {
        ArmClient {
            shared,
            credential,
            base: endpoint.as_str().trim_end_matches('/').to_string(),
            scope: scope.to_string(),
        }
    }

    async fn send(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, Error> {
        let token = super::identity::token(self.credential.as_ref(), &self.scope).await?;
        let timer = Timer::start(&self.shared.metrics, SERVICE, operation);
        let response = request.bearer_auth(token).send().await.map_err(|e| {
            Error::new(
                SERVICE,
                operation,
                Class::Transient { retry_after: None },
                format!("request failed: {}", super::identity::error_chain(&e)),
            )
        });
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                timer.done("error");
                return Err(e);
            }
        };
        let status = response.status().as_u16();
        timer.done(&status.to_string());
        let retry_after = self.shared.observe(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let parsed: Option<ArmError> = serde_json::from_slice(&body).ok();
        let (code, message) = match parsed {
            Some(e) => (e.error.code, e.error.message.unwrap_or_default()),
            None => (None, String::new()),
        };
        Err(Error {
            service: SERVICE,
            operation,
            status: Some(status),
            class: class_of_status(status, code.as_deref(), retry_after),
            code,
            message,
        })
    }

    /// Assigns the built-in role named `role` to the service principal `principal_id` at
    /// `scope` (an ARM resource id). The assignment's name is derived from the three, so a
    /// repeat is the same assignment, never a second one.
    pub async fn assign_role(
        &self,
        scope: &str,
        role: &str,
        principal_id: &str,
    ) -> Result<Assigned, Error> {
        let scope = scope.trim_end_matches('/');
        let filter: String =
            url::form_urlencoded::byte_serialize(format!("roleName eq '{role}'").as_bytes())
                .collect();
        let url = format!(
            "{}{scope}/providers/Microsoft.Authorization/roleDefinitions?api-version={API_VERSION}&$filter={filter}",
            self.base
        );
        let body = self
            .send("list_role_definitions", self.shared.http.get(url))
            .await?;
        let definitions: RoleDefinitions = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                SERVICE,
                "list_role_definitions",
                Class::Transient { retry_after: None },
                format!("unreadable answer: {e}"),
            )
        })?;
        let Some(definition) = definitions.value.into_iter().next() else {
            return Err(Error::new(
                SERVICE,
                "list_role_definitions",
                Class::Permanent,
                format!("no role named '{role}' at {scope}"),
            ));
        };
        let name = assignment_name(scope, &definition.id, principal_id);
        let url = format!(
            "{}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={API_VERSION}",
            self.base
        );
        let body = json!({"properties": {
            "roleDefinitionId": definition.id,
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
        }});
        match self
            .send("put_role_assignment", self.shared.http.put(url).json(&body))
            .await
        {
            Ok(_) => Ok(Assigned::Created),
            Err(e) if e.code.as_deref() == Some("RoleAssignmentExists") => Ok(Assigned::Existed),
            Err(e) => Err(e),
        }
    }
}

/// A role assignment's name: a UUID made from scope, role and principal (a v4-shaped hash, so
/// that a rerun of `register` PUTs the same assignment).
pub fn assignment_name(scope: &str, definition_id: &str, principal_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(
        format!(
            "{}|{}|{}",
            scope.to_ascii_lowercase(),
            definition_id.to_ascii_lowercase(),
            principal_id.to_ascii_lowercase()
        )
        .as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_assignment_name_is_a_stable_guid() {
        let a = super::assignment_name("/subscriptions/s", "/x/roleDefinitions/r", "P");
        assert_eq!(
            a,
            super::assignment_name("/Subscriptions/S", "/x/roleDefinitions/R", "p")
        );
        assert!(uuid::Uuid::parse_str(&a).is_ok());
        assert_ne!(
            a,
            super::assignment_name("/subscriptions/s", "/x/roleDefinitions/r", "q")
        );
    }
}
