//! Reading the routes' secrets on the host at start: from the variable a
//! route names (`token_ref`) or the output of its `token_command`. They go
//! to the gate alone, on its standard input; the agent never sees them.

use std::process::{Command, Stdio};

use bottle_manifest::plan::Plan;

use crate::BackendError;

/// One secret per route of `plan`, in order.
pub fn resolve(plan: &Plan) -> Result<Vec<String>, BackendError> {
    plan.egress
        .routes
        .iter()
        .map(|route| {
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
                        .map_err(|_| {
                            fail("token_command printed something that is not UTF-8".into())
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_owned()
                }
                (None, None) => {
                    return Err(fail("the route has no token_ref or token_command".into()));
                }
            };
            if value.is_empty() {
                return Err(fail("the secret is empty".into()));
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(fail(
                    "the secret spans several lines; a header value cannot".into(),
                ));
            }
            Ok(value)
        })
        .collect()
}
