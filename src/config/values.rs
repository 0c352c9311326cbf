//! How values are read out of the TOML: where they are (file, line, key), paths relative to the
//! config file, URLs, durations and the files that hold secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::{ConfigError, S};
use crate::clock::parse_duration;

/// The file being read, for errors that name their line.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a Path,
    pub(super) source: &'a str,
    /// Where in `source` the text being read starts (a `[[clients]]` section read on its own):
    /// its spans count from there.
    pub(super) base: usize,
}

impl Ctx<'_> {
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.source[..(self.base + offset).min(self.source.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }
    pub(super) fn err_at<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let _ = std::marker::PhantomData::<T>;
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line_of(span.start)),
            key: key.to_string(),
            message: message.into(),
        }
    }
    pub(super) fn err<T>(
        &self,
        value: &S<T>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.err_at::<T>(value.span(), key, message)
    }
    /// A TOML syntax or type error, at its line.
    pub(super) fn toml_error(&self, e: toml::de::Error) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: e.span().map(|s| self.line_of(s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
        }
    }
    pub(super) fn err_nowhere(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: None,
            key: key.to_string(),
            message: message.into(),
        }
    }
    /// Resolves a path from the config relative to the config file's folder.
    pub(super) fn path(&self, raw: &str) -> PathBuf {
        let expanded = expand_env(raw);
        let p = PathBuf::from(expanded);
        if p.is_absolute() {
            p
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// Expands `$VAR` and `${VAR}` (systemd's `$CREDENTIALS_DIRECTORY` in particular).
pub(super) fn expand_env(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            }
        } else {
            let n = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..n], &after[n..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&std::env::var(name).unwrap_or_default());
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

/// A DNS name as a Host header carries it: dot-separated labels of letters, digits and hyphens.
pub(super) fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(super) fn https_url(ctx: &Ctx<'_>, v: &S<String>, key: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(v.get_ref())
        .map_err(|e| ctx.err(v, key, format!("'{}' is not a URL: {e}", v.get_ref())))?;
    if url.scheme() != "https" {
        return Err(ctx.err(v, key, format!("'{}' must use https", v.get_ref())));
    }
    if url.host_str().is_none() {
        return Err(ctx.err(v, key, format!("'{}' has no host", v.get_ref())));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ctx.err(
            v,
            key,
            format!("'{}' must not have a query or fragment", v.get_ref()),
        ));
    }
    Ok(url)
}

pub(super) fn read_secret_file(
    ctx: &Ctx<'_>,
    v: &S<String>,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<SecretString, ConfigError> {
    let path = ctx.path(v.get_ref());
    // The file's text holds the secret too: wiped once the secret is taken out of it.
    let text = std::fs::read_to_string(&path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| ctx.err(v, key, format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ctx.err(v, key, format!("{} is empty", path.display())));
    }
    if let Some(mode) = crate::files::readable_by_others(&path) {
        warnings.push(format!(
            "{}: {key}: the secret file {} is readable by group or others (mode {mode:04o}): chmod 600 it",
            ctx.file.display(),
            path.display()
        ));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

pub(super) fn duration(ctx: &Ctx<'_>, v: &S<String>, key: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(v.get_ref()).map_err(|e| ctx.err(v, key, e))?;
    if d.is_zero() {
        return Err(ctx.err(v, key, "must be longer than zero"));
    }
    Ok(d)
}
