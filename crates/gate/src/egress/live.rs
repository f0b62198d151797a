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
    pub fn add_route(&self, mut route: Route) -> Result<(), String> {
        // An approval never widens where a credential serves: a route
        // replacing a scoped one keeps its scope, and a new route to
        // Anthropic's own API serves the model's paths alone.
        let scope = self
            .credentials()
            .routes()
            .iter()
            .find(|r| r.host == route.host)
            .map(|r| r.paths.clone())
            .filter(|paths| !paths.is_empty())
            .or_else(|| {
                bottle_manifest::plan::is_anthropic_api(&route.host.to_string())
                    .then(bottle_manifest::plan::model_api_paths)
            });
        if let Some(paths) = scope
            && route.paths.is_empty()
        {
            route.paths = paths;
        }
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

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::egress::credentials::{PathRule, Secret};
    use bottle_manifest::host::Host;

    fn route(host: &str, paths: Vec<PathRule>) -> Route {
        Route {
            paths,
            ..Route::whole_host(
                Host::Name(host.into()),
                http::header::AUTHORIZATION,
                "Bearer".into(),
                Secret::new(format!("secret-of-{host}")),
            )
        }
    }

    #[test]
    fn an_approved_route_never_widens_where_a_credential_serves() {
        let scoped = vec![PathRule::any("/v1/messages")];
        let live = Live::new(
            Policy::new(Vec::new(), &crate::config::EgressConfig::default()),
            Credentials::new(vec![route("model.test", scoped.clone())]).unwrap(),
        );
        // Replacing a scoped route keeps its scope.
        live.add_route(route("model.test", Vec::new())).unwrap();
        // A new route to Anthropic's own API serves the model alone.
        live.add_route(route("api.anthropic.com", Vec::new()))
            .unwrap();
        // Any other new route is for its whole host, as approved.
        live.add_route(route("other.test", Vec::new())).unwrap();
        let creds = live.credentials();
        let paths = |host: &str| {
            creds
                .routes()
                .iter()
                .find(|r| r.host.to_string() == host)
                .unwrap()
                .paths
                .clone()
        };
        assert_eq!(paths("model.test"), scoped);
        assert_eq!(
            paths("api.anthropic.com"),
            bottle_manifest::plan::model_api_paths()
        );
        assert!(paths("other.test").is_empty());
    }
}
