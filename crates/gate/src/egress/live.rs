//! The egress policy and credential routes as they are *now*: what the
//! person approved while the bottle runs is swapped in whole, without a
//! restart. Every request reads one snapshot, so a request never sees half
//! a change, and connections already open keep running.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use bottle_manifest::host::{Host, HostRule};

use super::credentials::{Credentials, Retired, Route, Secret};
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
        let now = self.credentials();
        // The secret an approval replaces stays on the watch list.
        let mut retired: Vec<Retired> = now
            .routes()
            .iter()
            .filter(|r| r.host == route.host && r.secret.expose() != route.secret.expose())
            .map(|r| Retired {
                host: r.host.clone(),
                secret: r.secret.clone(),
            })
            .collect();
        retired.extend(now.retired().iter().cloned());
        let mut routes: Vec<Route> = now
            .routes()
            .iter()
            .filter(|r| r.host != route.host)
            .cloned()
            .collect();
        routes.push(route);
        self.credentials
            .store(Arc::new(Credentials::with_retired(routes, retired)?));
        Ok(())
    }

    /// Gives the route to `host` a refreshed secret; the one it replaces
    /// is still watched for. Nothing else of the route changes.
    pub fn rotate(&self, host: &Host, secret: Secret) -> Result<(), String> {
        let now = self.credentials();
        let Some(old) = now.routes().iter().find(|r| &r.host == host) else {
            return Err(format!("the bottle has no route to {host}"));
        };
        if old.secret.expose() == secret.expose() {
            return Ok(());
        }
        let mut retired = vec![Retired {
            host: host.clone(),
            secret: old.secret.clone(),
        }];
        retired.extend(now.retired().iter().cloned());
        let routes = now
            .routes()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if &r.host == host {
                    r.secret = secret.clone();
                }
                r
            })
            .collect();
        self.credentials
            .store(Arc::new(Credentials::with_retired(routes, retired)?));
        Ok(())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::egress::credentials::PathRule;

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

    #[test]
    fn a_rotated_secret_is_sent_and_the_one_it_replaced_still_counts_as_a_leak() {
        let scoped = vec![PathRule::any("/v1/messages")];
        let live = Live::new(
            Policy::new(Vec::new(), &crate::config::EgressConfig::default()),
            Credentials::new(vec![
                route("model.test", scoped.clone()),
                route("other.test", Vec::new()),
            ])
            .unwrap(),
        );
        let model = Host::Name("model.test".into());
        let other = Host::Name("other.test".into());
        live.rotate(&model, Secret::new("fresh-token-1".into()))
            .unwrap();
        live.rotate(&model, Secret::new("fresh-token-2".into()))
            .unwrap();
        let creds = live.credentials();
        let now = creds.route_for(&model, 443).unwrap();
        assert_eq!(&*now.header_value(), "Bearer fresh-token-2");
        assert_eq!(now.paths, scoped, "the route keeps its scope");
        // Both replaced secrets, and the new one, are leaks elsewhere and
        // scrubbed from what comes back.
        for old in ["secret-of-model.test", "fresh-token-1", "fresh-token-2"] {
            let leak = creds.find_leak(old.as_bytes(), &other, "body").unwrap();
            assert_eq!(leak.route_host, "model.test");
            assert!(creds.find_leak(old.as_bytes(), &model, "body").is_none());
        }
        // The other route is untouched; a host without a route is refused.
        assert!(creds.route_for(&other, 443).unwrap().secret.expose() == "secret-of-other.test");
        let none = Host::Name("none.test".into());
        assert!(live.rotate(&none, Secret::new("x".into())).is_err());
        // The watched list is bounded.
        for i in 0..20 {
            live.rotate(&model, Secret::new(format!("tok-{i}")))
                .unwrap();
        }
        assert_eq!(
            live.credentials().retired().len(),
            crate::egress::credentials::RETIRED_KEPT
        );
    }
}
