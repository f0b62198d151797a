//! The plan as a person reads it: the preflight and `--dry-run`.

use std::fmt::Write as _;

use super::Plan;
use crate::manifest::Runtime;

impl Plan {
    /// The plan as a person reads it (preflight and `--dry-run`).
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(s, "  {k:<13}{v}");
        };
        line("identity", &self.identity);
        line("agent", &format!("{} (bottle {})", self.agent, self.bottle));
        line("manifest", &self.manifest.display().to_string());
        if self.backend_reason.is_empty() {
            line("backend", &self.backend);
        } else {
            line(
                "backend",
                &format!("{} ({})", self.backend, self.backend_reason),
            );
        }
        line("command", &shell_words(&self.command));
        match &self.images.bottle {
            Some(own) => {
                line(
                    "image",
                    &format!(
                        "{} ({} plus {} approved change{})",
                        own.tag,
                        self.images.agent,
                        own.fragments.len(),
                        if own.fragments.len() == 1 { "" } else { "s" }
                    ),
                );
                for (n, fragment) in own.fragments.iter().enumerate() {
                    line(
                        "change",
                        &format!(
                            "{} (request {}), built in the bottle's policy as:",
                            n + 1,
                            own.requests.get(n).map_or("?", String::as_str)
                        ),
                    );
                    for step in crate::fragment::render_text(fragment).lines() {
                        line("", &format!("  {step}"));
                    }
                }
            }
            None => line("image", &self.images.agent),
        }
        line(
            "runtime",
            match self.runtime {
                Runtime::Auto => "auto (gVisor when the engine has runsc)",
                Runtime::Runc => "runc",
                Runtime::Runsc => "runsc (gVisor)",
            },
        );
        line(
            "network",
            &format!(
                "agent: none (loopback only); gate: {}",
                self.gate_network
                    .as_deref()
                    .map(|n| format!("{n} (from the manifest)"))
                    .unwrap_or_else(|| "a network of its own".to_owned())
            ),
        );
        let allow = if self.egress.allow.is_empty() {
            "nothing (every request is refused)".to_owned()
        } else {
            self.egress
                .allow
                .iter()
                .map(|r| r.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        line("allow", &allow);
        if !self.egress.allow_private.is_empty() {
            line("private ok", &self.egress.allow_private.join(", "));
        }
        for route in &self.egress.routes {
            let secret = match (&route.token_ref, route.token_refresh_secs) {
                (Some(var), _) => format!("${var}"),
                (None, Some(secs)) => format!(
                    "token_command, run again every {}",
                    humantime::format_duration(std::time::Duration::from_secs(secs))
                ),
                (None, None) => "token_command".to_owned(),
            };
            let roles = if route.roles.is_empty() {
                String::new()
            } else {
                format!(" roles: {}", route.roles.join(", "))
            };
            let scope = if route.paths.is_empty() {
                String::new()
            } else {
                format!(
                    "; only for {}",
                    route
                        .paths
                        .iter()
                        .map(super::PathRule::describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            line(
                "route",
                &format!(
                    "{} {}: {} {secret}{roles}{scope}",
                    route.host, route.header, route.scheme
                ),
            );
        }
        if let Some(ca) = &self.egress.upstream_ca {
            line("upstream CA", &ca.display().to_string());
        }
        for git in &self.git {
            line(
                "git",
                &format!(
                    "{} -> {} key {} (host key {}) push {} force={} delete={} tags={}",
                    git.name,
                    git.upstream,
                    git.identity_file.display(),
                    if git.host_key_pinned {
                        "pinned by the manifest".to_owned()
                    } else {
                        format!(
                            "trusted on first use, recorded in {}",
                            self.state_dir
                                .join("git")
                                .join(format!("{}.known_hosts", git.name))
                                .display()
                        )
                    },
                    git.push.branches.join(","),
                    git.push.force,
                    git.push.delete,
                    git.push.tags
                ),
            );
        }
        let env: Vec<String> = self
            .env
            .iter()
            .filter(|e| e.source != super::EnvSource::Bottle)
            .map(|e| match &e.host_var {
                Some(var) => format!("{}=${var}", e.name),
                None => e.name.clone(),
            })
            .collect();
        if !env.is_empty() {
            line("env", &env.join(", "));
        }
        line(
            "prompt",
            &format!(
                "{} (bot-bottle's section{})",
                self.provision.prompt_file,
                if self.has_prompt {
                    " + the agent's prompt"
                } else {
                    ""
                }
            ),
        );
        for skill in &self.provision.skills {
            line(
                "skill",
                &format!("{} from {}", skill.name, skill.source.display()),
            );
        }
        match &self.provision.supervise_url {
            Some(url) => line(
                "supervise",
                &format!(
                    "MCP server at {url}: the agent may ask; `bottle requests` shows what it asks"
                ),
            ),
            None => line("supervise", "off (the agent cannot ask for more)"),
        }
        match &self.remote_control {
            Some(rc) => line(
                "remote control",
                &format!(
                    "on: session {} of your claude.ai account ({} plan), at claude.ai/code and in the Claude app; its requests to {} are allowed for this run only, with your sign-in sent by the gate (the bottle holds placeholders); anyone at that account can steer the agent, and while it is on the bottle's sign-in can also list and start Claude Code sessions on the account (Remote Control's own API), and the session secrets the server issues are the agent's",
                    rc.name,
                    rc.account.subscription_type,
                    super::ANTHROPIC_API_HOST
                ),
            ),
            None => line(
                "remote control",
                "off (bottle start --remote-control turns it on)",
            ),
        }
        line(
            "resources",
            &format!(
                "agent: cpus {}, memory {} MiB, pids {}, /tmp {} MiB, open files {}, root read-only; gates: cpus {}, memory {} MiB; builds: {} min",
                self.resources
                    .cpus
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "all".to_owned()),
                self.resources.memory_bytes >> 20,
                self.resources.pids,
                self.resources.tmp_bytes >> 20,
                self.resources.nofile,
                self.resources.gate_cpus,
                self.resources.gate_memory_bytes >> 20,
                self.resources.build_timeout_secs / 60,
            ),
        );
        match &self.workspace {
            Some(w) if w.mode == super::WorkspaceMode::Git => line(
                "workspace",
                &format!(
                    "a copy of {} (files git tracks, untracked files it does not ignore, and .git)",
                    w.source.display()
                ),
            ),
            Some(w) if w.mode == super::WorkspaceMode::GitSubdir => line(
                "workspace",
                &format!(
                    "a copy of {} (inside a git repository: files git tracks and untracked files it does not ignore; no .git)",
                    w.source.display()
                ),
            ),
            Some(w) => line(
                "workspace",
                &format!("a copy of every file in {}", w.source.display()),
            ),
            None => line(
                "workspace",
                "empty (pass --cwd to work on a copy of this directory)",
            ),
        }
        if let Some(w) = &self.workspace {
            const SHOWN: usize = 10;
            for left in w.left_out.iter().take(SHOWN) {
                line(
                    "left out",
                    &format!(
                        "{}: {} (--include it to copy it)",
                        left.path.display(),
                        left.reason
                    ),
                );
            }
            if w.left_out.len() > SHOWN {
                line(
                    "left out",
                    &format!(
                        "… and {} more (--format json lists them)",
                        w.left_out.len() - SHOWN
                    ),
                );
            }
            for change in &w.config_changes {
                line("git config", change);
            }
        }
        line("state", &self.state_dir.display().to_string());
        line(
            "on exit",
            if self.remove_on_exit {
                "remove everything (--rm)"
            } else {
                "remove containers and network; keep the volumes and state (bottle resume IDENTITY)"
            },
        );
        s
    }
}

/// Argv quoted for display, so a person sees where each argument ends.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
