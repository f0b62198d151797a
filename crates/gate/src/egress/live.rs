//! The egress policy and credential routes as they are *now*: what the
//! person approved while the bottle runs is swapped in whole, without a
//! restart. Every request reads one snapshot, so a request never sees half
//! a change, and connections already open keep running.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use bottle_manifest::host::HostRule;

use super::credentials::{Credentials, Route};
use super::policy::Policy;

/// The swappable policy and routes of one gate, and the image its bottle
/// was last rebuilt on (for `show_policy`).
pub struct Live {
    policy: ArcSwap<Policy>,
    credentials: ArcSwap<Credentials>,
    image: ArcSwapOption<String>,
}

impl Live {
    pub fn new(policy: Policy, credentials: Credentials) -> Live {
        Live {
            policy: ArcSwap::from_pointee(policy),
            credentials: ArcSwap::from_pointee(credentials),
            image: ArcSwapOption::empty(),
        }
    }

    /// The image an approved change rebuilt the bottle on, if one did
    /// while this gate runs.
    pub fn image(&self) -> Option<Arc<String>> {
        self.image.load_full()
    }

    /// Records the bottle's new image.
    pub fn set_image(&self, image: String) {
        self.image.store(Some(Arc::new(image)));
    }

    /// The policy now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The routes now.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }

    /// Adds an allow rule, unless the policy has it already. Changes come
    /// from one place (the control socket, one at a time), so
    /// read-modify-write needs no lock.
    pub fn allow(&self, rule: HostRule) {
        if let Some(next) = self.policy().with_rule(rule) {
            self.policy.store(Arc::new(next));
        }
    }

    /// Adds a credential route (replacing one to the same host), or
    /// leaves the routes as they were when the new set's leak check cannot
    /// be compiled.
    pub fn add_route(&self, route: Route) -> Result<(), String> {
        let mut routes: Vec<Route> = self
            .credentials()
            .routes()
            .iter()
            .filter(|r| r.host != route.host)
            .cloned()
            .collect();
        routes.push(route);
        self.credentials.store(Arc::new(Credentials::new(routes)?));
        Ok(())
    }
}
