//! The operations the emulator journals and fault rules name: one enum, so that a misspelt
//! operation in a handler, a fault rule or a test does not compile. The wire form (the journal's
//! JSON, the control API's fault rules and `/control/operations`) is the dotted string, which
//! stays as it always was: scripts and the Python tests use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! operations {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal, served: $served:literal;)+) => {
        /// One operation of the emulated services.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Operation {
            $($(#[$doc])* $variant,)+
        }

        impl Operation {
            /// Every operation, in the order `/control/operations` has always listed them.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant,)+];

            /// The wire form: `graph.add_password`, `keyvault.set_secret`, `token`, ...
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Operation::$variant => $wire,)+
                }
            }

            /// Whether a request to the emulator's services can be this operation (and so a
            /// fault rule can name it). What is not served is journalled only, for a change a
            /// person makes in the portal.
            pub const fn is_served(self) -> bool {
                match self {
                    $(Operation::$variant => $served,)+
                }
            }
        }
    };
}

operations! {
    Token = "token", served: true;
    OpenidConfiguration = "openid_configuration", served: true;
    ManagedIdentityToken = "managed_identity_token", served: true;
    GraphGetApplication = "graph.get_application", served: true;
    GraphListApplications = "graph.list_applications", served: true;
    GraphAddPassword = "graph.add_password", served: true;
    GraphRemovePassword = "graph.remove_password", served: true;
    GraphCreateApplication = "graph.create_application", served: true;
    GraphUpdateApplication = "graph.update_application", served: true;
    GraphListOwners = "graph.list_owners", served: true;
    GraphCreateServicePrincipal = "graph.create_service_principal", served: true;
    GraphListServicePrincipals = "graph.list_service_principals", served: true;
    GraphGetServicePrincipal = "graph.get_service_principal", served: true;
    ArmPutRoleAssignment = "arm.put_role_assignment", served: true;
    ArmGetRoleAssignment = "arm.get_role_assignment", served: true;
    ArmListRoleDefinitions = "arm.list_role_definitions", served: true;
    DicomGet = "dicom.get", served: true;
    KeyvaultSetSecret = "keyvault.set_secret", served: true;
    KeyvaultGetSecret = "keyvault.get_secret", served: true;
    KeyvaultListVersions = "keyvault.list_versions", served: true;
    KeyvaultListSecrets = "keyvault.list_secrets", served: true;
    KeyvaultUpdateSecret = "keyvault.update_secret", served: true;
    KeyvaultDeleteSecret = "keyvault.delete_secret", served: true;
    KeyvaultGetDeletedSecret = "keyvault.get_deleted_secret", served: true;
    KeyvaultRecoverDeletedSecret = "keyvault.recover_deleted_secret", served: true;
    KeyvaultPurgeDeletedSecret = "keyvault.purge_deleted_secret", served: true;
    /// A person turning an application's sign-in off or on in the portal.
    GraphUpdateServicePrincipal = "graph.update_service_principal", served: false;
}

impl Operation {
    /// The operations a fault rule can name, as `/control/operations` lists them.
    pub fn served() -> impl Iterator<Item = Operation> {
        Operation::ALL.iter().copied().filter(|o| o.is_served())
    }

    /// A token request (client credentials or managed identity): Entra's error shape.
    pub const fn is_token(self) -> bool {
        matches!(self, Operation::Token | Operation::ManagedIdentityToken)
    }

    /// A Microsoft Graph call: Graph's error shape.
    pub fn is_graph(self) -> bool {
        self.as_str().starts_with("graph.")
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no operation of the emulator; its message names it and lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOperation(pub String);

impl fmt::Display for UnknownOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Operation::served().map(Operation::as_str).collect();
        write!(
            f,
            "unknown operation '{}'; known: {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownOperation {}

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(s: &str) -> Result<Operation, UnknownOperation> {
        Operation::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOperation(s.to_string()))
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Operation, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_reads_back_from_its_wire_form() {
        for &op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
            assert_eq!(
                serde_json::to_string(&op).unwrap(),
                format!("\"{}\"", op.as_str())
            );
            assert_eq!(
                serde_json::from_str::<Operation>(&format!("\"{op}\"")).unwrap(),
                op
            );
        }
    }

    #[test]
    fn an_unknown_name_is_refused_by_name_with_the_known_ones() {
        let e = "graph.add_pasword".parse::<Operation>().unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("unknown operation 'graph.add_pasword'; known: token, "),
            "{message}"
        );
        assert!(message.contains("graph.add_password"), "{message}");
        assert!(
            !message.contains("graph.update_service_principal"),
            "a journal-only operation is not offered: {message}"
        );
        let e = serde_json::from_str::<Operation>("\"kv.set_secret\"").unwrap_err();
        assert!(
            e.to_string().contains("unknown operation 'kv.set_secret'"),
            "{e}"
        );
    }
}
