//! The shim's command line: one typed value, parsed by `bottle shim` and
//! built by every backend with [`ShimArgs::to_args`], so the two sides
//! cannot drift apart.

use std::path::PathBuf;
use std::str::FromStr;

/// One loopback port bridged to one gate socket (`PORT=SOCKET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub socket: PathBuf,
}

impl FromStr for Forward {
    type Err = String;

    fn from_str(spec: &str) -> Result<Forward, String> {
        let (port, socket) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected PORT=SOCKET"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{spec:?}: {port:?} is not a port"))?;
        Ok(Forward {
            port,
            socket: socket.into(),
        })
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.port, self.socket.display())
    }
}

/// A JSON file's keys merged into another file (`SOURCE=DEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeJson {
    pub source: PathBuf,
    pub dest: PathBuf,
}

impl FromStr for MergeJson {
    type Err = String;

    fn from_str(spec: &str) -> Result<MergeJson, String> {
        let (source, dest) = spec
            .split_once('=')
            .filter(|(s, d)| s.starts_with('/') && d.starts_with('/'))
            .ok_or_else(|| format!("{spec:?}: expected /SOURCE=/DEST"))?;
        Ok(MergeJson {
            source: source.into(),
            dest: dest.into(),
        })
    }
}

impl std::fmt::Display for MergeJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.source.display(), self.dest.display())
    }
}

/// `UID:GID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl FromStr for User {
    type Err = String;

    fn from_str(spec: &str) -> Result<User, String> {
        crate::parse_user(spec)
            .map(|(uid, gid)| User { uid, gid })
            .ok_or_else(|| format!("{spec:?}: expected UID:GID"))
    }
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// How much Landlock the command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Landlock {
    /// Where the kernel has it.
    BestEffort,
    /// Refuse to start the command when the kernel enforces none of it.
    Required,
}

/// How long the shim waits for the gate's sockets unless told otherwise.
pub const DEFAULT_GATE_TIMEOUT_MS: u64 = 15_000;

/// `bottle shim …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ShimArgs {
    /// PORT=SOCKET: forward 127.0.0.1:PORT to the Unix socket.
    #[arg(long = "forward", value_name = "PORT=SOCKET")]
    pub forwards: Vec<Forward>,
    /// How long to wait for the gate's sockets, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_GATE_TIMEOUT_MS)]
    pub gate_timeout_ms: u64,
    /// The bottle's CA, added to the system trust stores (as root).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// UID:GID the command runs as.
    #[arg(long, value_name = "UID:GID")]
    pub user: Option<User>,
    /// Most processes of the command's user (RLIMIT_NPROC): set where the
    /// sandbox counts them for this bottle alone.
    #[arg(long, value_name = "N")]
    pub nproc: Option<u64>,
    /// Most writable private memory of each process (RLIMIT_DATA): set
    /// where no memory cgroup bounds the sandbox.
    #[arg(long, value_name = "BYTES")]
    pub data_limit: Option<u64>,
    /// Most open files of each process (RLIMIT_NOFILE, soft and hard).
    #[arg(long, value_name = "N")]
    pub nofile: Option<u64>,
    /// Confine the command with Landlock.
    #[arg(long, value_enum)]
    pub landlock: Option<Landlock>,
    /// /SOURCE=/DEST: merge the JSON object in SOURCE into the one in
    /// DEST (made when missing), as the command's user, before it starts.
    #[arg(long = "merge-json", value_name = "/SOURCE=/DEST")]
    pub merge_json: Vec<MergeJson>,
    /// The command to run.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

impl ShimArgs {
    /// `command` with nothing else: no forwards, no CA, no user, no
    /// limits, no Landlock, the default wait for the gate.
    pub fn new(command: Vec<String>) -> ShimArgs {
        ShimArgs {
            forwards: Vec::new(),
            gate_timeout_ms: DEFAULT_GATE_TIMEOUT_MS,
            ca: None,
            user: None,
            nproc: None,
            data_limit: None,
            nofile: None,
            landlock: None,
            merge_json: Vec::new(),
            command,
        }
    }

    /// The arguments after `bottle shim`, which parse back to `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for forward in &self.forwards {
            args.extend(["--forward".to_owned(), forward.to_string()]);
        }
        args.extend([
            "--gate-timeout-ms".to_owned(),
            self.gate_timeout_ms.to_string(),
        ]);
        if let Some(ca) = &self.ca {
            args.extend(["--ca".to_owned(), ca.display().to_string()]);
        }
        if let Some(user) = self.user {
            args.extend(["--user".to_owned(), user.to_string()]);
        }
        for (flag, value) in [
            ("--nproc", self.nproc),
            ("--data-limit", self.data_limit),
            ("--nofile", self.nofile),
        ] {
            if let Some(v) = value {
                args.extend([flag.to_owned(), v.to_string()]);
            }
        }
        match self.landlock {
            Some(Landlock::BestEffort) => {
                args.extend(["--landlock".to_owned(), "best-effort".to_owned()])
            }
            Some(Landlock::Required) => {
                args.extend(["--landlock".to_owned(), "required".to_owned()])
            }
            None => {}
        }
        for merge in &self.merge_json {
            args.extend(["--merge-json".to_owned(), merge.to_string()]);
        }
        args.push("--".to_owned());
        args.extend(self.command.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ShimArgs,
    }

    fn round_trip(args: &ShimArgs) -> ShimArgs {
        let argv = std::iter::once("shim".to_owned()).chain(args.to_args());
        Wrap::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .args
    }

    #[test]
    fn what_a_backend_builds_the_shim_parses_back() {
        let full = ShimArgs {
            forwards: vec![
                Forward {
                    port: 3128,
                    socket: "/run/bottle/egress.sock".into(),
                },
                Forward {
                    port: 9418,
                    socket: "/run/bottle/git.sock".into(),
                },
            ],
            gate_timeout_ms: 1234,
            ca: Some("/etc/bot-bottle/ca.pem".into()),
            user: Some(User {
                uid: 10001,
                gid: 10001,
            }),
            nproc: Some(64),
            data_limit: Some(1 << 30),
            nofile: Some(2048),
            landlock: Some(Landlock::Required),
            merge_json: vec![MergeJson {
                source: "/run/bot-bottle/home/claude.json".into(),
                dest: "/home/agent/.claude.json".into(),
            }],
            command: vec!["bash".into(), "-c".into(), "--forward 1=x".into()],
        };
        assert_eq!(round_trip(&full), full);
        let bare = ShimArgs::new(vec!["true".into()]);
        assert_eq!(round_trip(&bare), bare);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            ["--forward", "3128"],
            ["--forward", "x=/s"],
            ["--user", "10001"],
        ] {
            let argv = ["shim"].into_iter().chain(bad).chain(["--", "true"]);
            assert!(Wrap::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
