//! The Graph calls that make a client from nothing (`register`) and find clients by tag
//! (`[discovery]`): applications by tag, creating an application and its service principal,
//! and an application's owners.

use serde::Deserialize;
use serde_json::json;

use super::graph::{Call, GraphClient, malformed};
use super::{Class, Error};

/// An application as found by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedApp {
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawApp {
    id: String,
    app_id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct RawApps {
    value: Vec<RawApp>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPrincipal {
    id: String,
    #[serde(default)]
    app_id: Option<String>,
}

#[derive(Deserialize)]
struct RawPrincipals {
    value: Vec<RawPrincipal>,
}

impl From<RawApp> for TaggedApp {
    fn from(a: RawApp) -> TaggedApp {
        TaggedApp {
            object_id: a.id.to_ascii_lowercase(),
            app_id: a.app_id.to_ascii_lowercase(),
            display_name: a.display_name.unwrap_or_default(),
            tags: a.tags,
        }
    }
}

fn quote(value: &str) -> String {
    value.replace('\'', "''")
}

impl GraphClient {
    /// Applications with a tag equal to `tag` (`exact`) or starting with it; every page.
    /// `tags/any(...)` with `eq` or `startsWith` is a basic query: no `ConsistencyLevel`.
    pub async fn apps_by_tag(&self, tag: &str, exact: bool) -> Result<Vec<TaggedApp>, Error> {
        let filter = if exact {
            format!("tags/any(t:t eq '{}')", quote(tag))
        } else {
            format!("tags/any(t:startsWith(t,'{}'))", quote(tag))
        };
        let filter: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        let mut url = format!(
            "{}/applications?$filter={filter}&$select=id,appId,displayName,tags&$top=999",
            self.base
        );
        let mut out = Vec::new();
        loop {
            let (_, body) = self
                .send("list_applications", Call::get(&url), false)
                .await?;
            let page: RawApps =
                serde_json::from_slice(&body).map_err(|e| malformed("list_applications", &e))?;
            out.extend(page.value.into_iter().map(TaggedApp::from));
            match page.next {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
    }

    /// `POST /applications`: single tenant, no redirect URIs, tagged. Its answer may be lost
    /// (`Class::OutcomeUnknown`): the caller finds a half-made app by its tag before creating again.
    pub async fn create_application(&self, name: &str, tag: &str) -> Result<TaggedApp, Error> {
        self.write_slot().await;
        let body = json!({"displayName": name, "signInAudience": "AzureADMyOrg", "tags": [tag]});
        let (_, body) = self
            .send(
                "create_application",
                Call::post(format!("{}/applications", self.base), &body),
                true,
            )
            .await?;
        serde_json::from_slice::<RawApp>(&body)
            .map(TaggedApp::from)
            .map_err(|e| {
                let mut e = malformed("create_application", &e);
                e.class = Class::OutcomeUnknown;
                e
            })
    }

    /// The app ids of the service principals among an application's owners.
    pub async fn owner_app_ids(&self, object_id: &str) -> Result<Vec<String>, Error> {
        let url = format!(
            "{}/applications/{object_id}/owners?$select=id,appId",
            self.base
        );
        let (_, body) = self.send("list_owners", Call::get(url), false).await?;
        let raw: RawPrincipals =
            serde_json::from_slice(&body).map_err(|e| malformed("list_owners", &e))?;
        Ok(raw
            .value
            .into_iter()
            .filter_map(|p| p.app_id.map(|a| a.to_ascii_lowercase()))
            .collect())
    }

    /// The object id of `app_id`'s service principal, if it has one.
    pub async fn service_principal(&self, app_id: &str) -> Result<Option<String>, Error> {
        let filter: String = url::form_urlencoded::byte_serialize(
            format!("appId eq '{}'", quote(app_id)).as_bytes(),
        )
        .collect();
        let url = format!(
            "{}/servicePrincipals?$filter={filter}&$select=id,appId",
            self.base
        );
        let (_, body) = self
            .send("list_service_principals", Call::get(url), false)
            .await?;
        let raw: RawPrincipals =
            serde_json::from_slice(&body).map_err(|e| malformed("list_service_principals", &e))?;
        Ok(raw
            .value
            .into_iter()
            .next()
            .map(|p| p.id.to_ascii_lowercase()))
    }

    /// `POST /servicePrincipals`; one that exists already (409) is looked up instead.
    pub async fn create_service_principal(&self, app_id: &str) -> Result<String, Error> {
        self.write_slot().await;
        let sent = self
            .send(
                "create_service_principal",
                Call::post(
                    format!("{}/servicePrincipals", self.base),
                    &json!({"appId": app_id}),
                ),
                true,
            )
            .await;
        match sent {
            Ok((_, body)) => serde_json::from_slice::<RawPrincipal>(&body)
                .map(|p| p.id.to_ascii_lowercase())
                .map_err(|e| malformed("create_service_principal", &e)),
            Err(e) if e.status == Some(409) => match self.service_principal(app_id).await? {
                Some(id) => Ok(id),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}
