//! Live reload (SIGHUP): what can change while the daemon runs, and how readers see a new
//! value without locks held across requests.
//!
//! A reload swaps the policy, the boot API, `[boot]`, `[[node]]` and `[[overlay]]` (and so the
//! templates) in one step each; the XDP attachment, the sockets, open TFTP transfers and HTTP
//! connections are untouched. Keys that shape those (interfaces, ports, backends, roots, TLS,
//! limits) take effect only after a restart, and the log says which ones changed.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::bootapi::{ApiUrlError, BootApi};
use crate::config::Config;
use crate::dhcp::Responder;

/// A value readers take a snapshot of (an `Arc` clone) and a reload replaces whole.
#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap(RwLock::new(Arc::new(value)))
    }

    pub fn load(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn store(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }
}

/// What decides whether and how a client is answered: the policy and, in API mode, the API.
#[derive(Debug)]
pub struct Decisions {
    pub responder: Responder,
    pub api: Option<Arc<BootApi>>,
}

impl Decisions {
    pub fn from_config(config: &Config) -> Result<Decisions, ApiUrlError> {
        let api = match &config.api.url {
            Some(url) => Some(Arc::new(BootApi::new(
                url,
                config.api.timeout,
                config.api.cache_ttl,
                config.api.max_cache,
            )?)),
            None => None,
        };
        Ok(Decisions {
            responder: Responder::new(config.policy.clone(), config.url_ports()),
            api,
        })
    }
}

/// The keys that differ between `old` and `new` but only take effect after a restart.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("server.interfaces", old.interfaces != new.interfaces);
    check("server.backend", old.backend != new.backend);
    check("xdp", old.xdp != new.xdp);
    check("tftp", old.tftp != new.tftp);
    check("http", old.http != new.http);
    check("admin", old.admin != new.admin);
    check("ipv6.enabled", old.ipv6.enabled != new.ipv6.enabled);
    check(
        "boot.secret_file",
        old.boot.secret_file != new.boot.secret_file,
    );
    changed
}

/// How long the SIGHUP handler waits between reloads at most once per this interval, so a
/// burst of signals is one reload.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_hands_out_the_new_value_and_keeps_the_old_one_alive() {
        let swap = Swap::new(1);
        let old = swap.load();
        swap.store(2);
        assert_eq!((*old, *swap.load()), (1, 2));
    }

    #[test]
    fn restart_keys_are_reported_and_reloadable_ones_are_not() {
        let old = Config::embedded().unwrap();
        let mut new = old.clone();
        new.boot.cmdline = "quiet".into();
        new.policy.rules.pop();
        // Read when the stop comes, so the reloaded bound is the one a stop uses.
        new.drain = std::time::Duration::from_secs(30);
        assert!(needs_restart(&old, &new).is_empty());
        new.http.port = 8080;
        new.interfaces = vec!["eth9".into()];
        assert_eq!(needs_restart(&old, &new), ["server.interfaces", "http"]);
    }
}
