//! The egress policy and credential routes as they are *now*: what the
//! person approved while the bottle runs is swapped in whole, without a
//! restart. Every request reads one snapshot, so a request never sees half
//! a change, and connections already open keep running.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bottle_manifest::host::HostRule;

use super::credentials::{Credentials, Route};
use super::policy::Policy;

/// The swappable policy and routes of one gate.
pub struct Live {
    policy: ArcSwap<Policy>,
    credentials: ArcSwap<Credentials>,
}

impl Live {
    pub fn new(policy: Policy, credentials: Credentials) -> Live {
        Live {
            policy: ArcSwap::from_pointee(policy),
            credentials: ArcSwap::from_pointee(credentials),
        }
    }

    /// The policy now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The routes now.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }

    /// Adds an allow rule. Changes come from one place (the control
    /// socket, one at a time), so read-modify-write needs no lock.
    pub fn allow(&self, rule: HostRule) {
        let next = self.policy().with_rule(rule);
        self.policy.store(Arc::new(next));
    }

    /// Adds a credential route (replacing one to the same host).
    pub fn add_route(&self, route: Route) {
        let mut routes: Vec<Route> = self
            .credentials()
            .routes()
            .iter()
            .filter(|r| r.host != route.host)
            .cloned()
            .collect();
        routes.push(route);
        self.credentials.store(Arc::new(Credentials::new(routes)));
    }
}
