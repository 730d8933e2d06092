//! Changing what a running server reads from files, without dropping a
//! connection: the access files (`allow_file`, `deny_file`) and the TLS
//! certificate, key and client CA files, read again when the program asks
//! (the binary: on SIGHUP, as nginx and HAProxy reload).
//!
//! Each part is swapped whole, or not at all: a file that no longer parses
//! leaves that part as it was, and the log says why. Open connections keep
//! what admitted them and their TLS session; the next accept, datagram and
//! handshake see the new configuration. The log says what changed, one
//! line per change, at info level (the binary shows this module's lines by
//! default).

use std::sync::Arc;

use super::config::ServeConfig;
use crate::error::{Error, Setting};
use crate::guard::{AccessList, Cidr, SharedAccess, read_access_file};
use crate::transport::tls::ServerTls;

/// Re-reads a server's files on request; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The blocks given directly (flags), which files add to.
    base: AccessList,
    allow_file: Option<std::path::PathBuf>,
    deny_file: Option<std::path::PathBuf>,
    /// The list in force, replaced when the files change.
    access: Arc<SharedAccess>,
    /// The TLS configuration, when the server has `tls://` endpoints.
    tls: Option<ServerTls>,
}

/// The access list at start: the configuration's blocks and its files'.
pub(super) fn access_list(config: &ServeConfig) -> Result<AccessList, Error> {
    let (allow, deny) = file_blocks(config.allow_file.as_deref(), config.deny_file.as_deref())?;
    Ok(config.access.with(&allow, &deny))
}

/// The blocks in the access files, if any.
fn file_blocks(
    allow: Option<&std::path::Path>,
    deny: Option<&std::path::Path>,
) -> Result<(Vec<Cidr>, Vec<Cidr>), Error> {
    let read = |path: Option<&std::path::Path>, setting| match path {
        Some(path) => read_access_file(path).map_err(|why| Error::setting(setting, why)),
        None => Ok(Vec::new()),
    };
    Ok((
        read(allow, Setting::AllowFile)?,
        read(deny, Setting::DenyFile)?,
    ))
}

impl Reloader {
    pub(super) fn new(
        config: &ServeConfig,
        access: Arc<SharedAccess>,
        tls: Option<ServerTls>,
    ) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                base: config.access.clone(),
                allow_file: config.allow_file.clone(),
                deny_file: config.deny_file.clone(),
                access,
                tls,
            }),
        }
    }

    /// Whether the server reads any file a reload would read again (with
    /// none, a reload has nothing to do; the binary then takes SIGHUP as
    /// the terminal closing).
    pub fn has_files(&self) -> bool {
        let inner = &self.inner;
        inner.allow_file.is_some()
            || inner.deny_file.is_some()
            || inner.tls.as_ref().is_some_and(ServerTls::has_files)
    }

    /// Reads the files again and puts what changed in force, logging each
    /// change (or that nothing changed). Returns the changes in words; the
    /// first error, when a part could not be read (that part stays as it
    /// was; the others still change).
    pub fn reload(&self) -> Result<Vec<String>, Error> {
        let inner = &self.inner;
        let mut changes = Vec::new();
        let mut failed = None;
        if inner.allow_file.is_some() || inner.deny_file.is_some() {
            match file_blocks(inner.allow_file.as_deref(), inner.deny_file.as_deref()) {
                Ok((allow, deny)) => {
                    let new = inner.base.with(&allow, &deny);
                    let old = inner.access.current();
                    changes.extend(differences("allow", old.allowed(), new.allowed()));
                    changes.extend(differences("deny", old.denied(), new.denied()));
                    if *old != new {
                        inner.access.replace(new);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(tls) = inner.tls.as_ref().filter(|tls| tls.has_files()) {
            match tls.reload() {
                Ok(tls_changes) => changes.extend(tls_changes),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        for change in &changes {
            tracing::info!(change = ?change, "reloaded");
        }
        match failed {
            Some(e) => {
                let stays = "reload failed; that part of the configuration stays as it was";
                match &e {
                    // The binary says which flag's file: `see=--deny-file`.
                    Error::Setting { setting, reason } => {
                        tracing::warn!(why = %reason, setting = setting.name(), "{stays}");
                    }
                    other => tracing::warn!(why = %other, "{stays}"),
                }
                Err(e)
            }
            None => {
                if changes.is_empty() {
                    tracing::info!("reloaded: nothing changed");
                }
                Ok(changes)
            }
        }
    }
}

/// `allow 10.0.0.0/8 added`, `deny 192.0.2.7/32 removed`: what differs
/// between two lists of blocks.
fn differences(list: &str, old: &[Cidr], new: &[Cidr]) -> Vec<String> {
    let added = new
        .iter()
        .filter(|c| !old.contains(c))
        .map(|c| format!("{list} {c} added"));
    let removed = old
        .iter()
        .filter(|c| !new.contains(c))
        .map(|c| format!("{list} {c} removed"));
    added.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn differences_name_what_came_and_went() {
        let old = [cidr("10.0.0.0/8"), cidr("192.0.2.7")];
        let new = [cidr("10.0.0.0/8"), cidr("2001:db8::/32")];
        assert_eq!(
            differences("deny", &old, &new),
            ["deny 2001:db8::/32 added", "deny 192.0.2.7/32 removed"]
        );
        assert!(differences("allow", &old, &old).is_empty());
    }

    #[test]
    fn a_reload_swaps_the_access_list_and_a_bad_file_keeps_it() {
        let dir = std::env::temp_dir().join(format!("sockecho-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let deny = dir.join("deny");
        std::fs::write(&deny, "# nobody yet\n").unwrap();
        let config = ServeConfig {
            deny_file: Some(deny.clone()),
            ..ServeConfig::default()
        };
        let access = Arc::new(SharedAccess::new(access_list(&config).unwrap()));
        let reloader = Reloader::new(&config, access.clone(), None);
        assert!(reloader.has_files());
        let ip = "192.0.2.7".parse().unwrap();
        assert!(access.current().permits(ip));
        std::fs::write(&deny, "192.0.2.7 # this one\n\n10.0.0.0/8\n").unwrap();
        let changes = reloader.reload().unwrap();
        assert_eq!(
            changes,
            ["deny 192.0.2.7/32 added", "deny 10.0.0.0/8 added"]
        );
        assert!(!access.current().permits(ip));
        std::fs::write(&deny, "192.0.2.7\nnot a block\n").unwrap();
        let err = reloader.reload().unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!access.current().permits(ip), "the list in force stays");
        assert!(!access.current().permits("10.1.1.1".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
