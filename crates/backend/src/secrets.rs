//! Reading the routes' secrets on the host: from the variable a route
//! names (`token_ref`) or the output of its `token_command`, at start, and
//! again on a route's `token_refresh` schedule while the bottle runs. They
//! go to the gate alone — on its standard input at start, through its
//! control socket later; the agent never sees them.

use std::convert::Infallible;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bottle_contract::control::{self, Change};
use bottle_manifest::plan::{Plan, RoutePlan};

use crate::{BackendError, Reporter};

/// One secret per route of `plan`, in order.
pub fn resolve(plan: &Plan) -> Result<Vec<String>, BackendError> {
    plan.egress.routes.iter().map(read).collect()
}

/// Runs the `token_command` of each route with a `token_refresh` again on
/// its schedule and hands the gate listening on `control` what it prints,
/// for as long as the bottle runs: it never returns. A command that fails,
/// or a gate that does not take the secret, is reported and the gate keeps
/// sending the secret it has.
pub async fn refresh(plan: &Plan, control: &Path, reporter: &dyn Reporter) -> Infallible {
    let each = plan.egress.routes.iter().filter_map(|route| {
        let period = Duration::from_secs(route.token_refresh_secs?);
        Some(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let sent = match run_again(route).await {
                    Ok(secret) => {
                        let change = Change::Rotate {
                            host: route.host.clone(),
                            secret,
                        };
                        match control::send(control, &change).await {
                            Ok(reply) if reply.ok => Ok(reply.message),
                            Ok(reply) => Err(reply.message),
                            Err(e) => Err(format!("the gate did not answer ({e})")),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match sent {
                    Ok(message) => reporter.detail(&message),
                    Err(message) => reporter.step(&format!(
                        "the secret of the route to {} was not refreshed, the gate sends the one it has: {message}",
                        route.host
                    )),
                }
            }
        })
    });
    futures_util::future::join_all(each).await;
    std::future::pending().await
}

/// How long a refresh's `token_command` may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(60);

/// A refreshing route's `token_command` run again, while the bottle runs:
/// with no terminal to ask on and its error output kept out of the
/// launcher's (it may hold the secret, and a detached launcher's output
/// is a file), killed after [`REFRESH_TIMEOUT`].
async fn run_again(route: &RoutePlan) -> Result<String, BackendError> {
    let fail = |message: String| BackendError::Secret {
        route: route.host.clone(),
        message,
    };
    let command = route
        .token_command_line
        .as_deref()
        .ok_or_else(|| fail("the route has no token_command".into()))?;
    let run = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(REFRESH_TIMEOUT, run)
        .await
        .map_err(|_| {
            fail(format!(
                "token_command did not finish within {} s (does it wait for input?)",
                REFRESH_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| fail(format!("cannot run token_command: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "token_command exited with {} (its error output is not shown: it may hold the secret)",
            out.status
        )));
    }
    let value = String::from_utf8(out.stdout)
        .map_err(|_| fail("token_command printed something that is not UTF-8".into()))?;
    checked(route, value.trim_end_matches(['\n', '\r']).to_owned())
}

/// The secret of one route, read on the host now.
fn read(route: &RoutePlan) -> Result<String, BackendError> {
    let fail = |message: String| BackendError::Secret {
        route: route.host.clone(),
        message,
    };
    let value = match (&route.token_ref, &route.token_command_line) {
        (Some(var), _) => std::env::var(var).map_err(|_| {
            fail(format!(
                "the host variable {var} is not set (or not UTF-8): export it"
            ))
        })?,
        (None, Some(command)) => {
            let out = Command::new("sh")
                .args(["-c", command])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| fail(format!("cannot run token_command: {e}")))?;
            if !out.status.success() {
                return Err(fail(format!("token_command exited with {}", out.status)));
            }
            String::from_utf8(out.stdout)
                .map_err(|_| fail("token_command printed something that is not UTF-8".into()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned()
        }
        (None, None) => {
            return Err(fail("the route has no token_ref or token_command".into()));
        }
    };
    checked(route, value)
}

/// `value` if it can be a route's secret.
fn checked(route: &RoutePlan, value: String) -> Result<String, BackendError> {
    let fail = |message: &str| BackendError::Secret {
        route: route.host.clone(),
        message: message.to_owned(),
    };
    if value.is_empty() {
        return Err(fail("the secret is empty"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(fail(
            "the secret spans several lines; a header value cannot",
        ));
    }
    Ok(value)
}
