//! `[server]`: the HTTP listener, its admin token and the host names it answers to.

use std::net::SocketAddr;

use secrecy::SecretString;
use serde::Deserialize;

use super::values::{Ctx, is_host_name, read_secret_file};
use super::{ConfigError, S};

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_token: Option<SecretString>,
    /// Host names (lower case) the HTTP API answers to besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<S<String>>,
    admin_token_file: Option<S<String>>,
    allowed_hosts: Option<Vec<S<String>>>,
}

/// Validates `[server]`; the admin token file is read here.
pub(super) fn parse(
    ctx: &Ctx<'_>,
    raw: &RawServer,
    warnings: &mut Vec<String>,
) -> Result<Server, ConfigError> {
    let listen = match &raw.listen {
        Some(v) => v.get_ref().parse().map_err(|_| {
            ctx.err(
                v,
                "server.listen",
                format!("'{}' is not an address:port", v.get_ref()),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 9464)),
    };
    let admin_token = match &raw.admin_token_file {
        Some(v) => {
            let token = read_secret_file(ctx, v, "server.admin_token_file", warnings)?;
            use secrecy::ExposeSecret;
            if token.expose_secret().len() < 16 {
                return Err(ctx.err(
                    v,
                    "server.admin_token_file",
                    "the admin token must have at least 16 characters",
                ));
            }
            Some(token)
        }
        None => None,
    };
    let mut allowed_hosts = Vec::new();
    for name in raw.allowed_hosts.iter().flatten() {
        if !is_host_name(name.get_ref()) {
            return Err(ctx.err(
                name,
                "server.allowed_hosts",
                format!(
                    "'{}' is not a host name (give a DNS name without scheme, port or path; IP addresses and localhost are always allowed)",
                    name.get_ref()
                ),
            ));
        }
        allowed_hosts.push(name.get_ref().to_ascii_lowercase());
    }
    Ok(Server {
        listen,
        admin_token,
        allowed_hosts,
    })
}
