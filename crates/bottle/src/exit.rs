//! Exit codes (docs/cli.md lists them). A bottle's command exits with its
//! own status, which `start` passes on; bot-bottle's own failures use the
//! sysexits codes below so scripts can tell the two apart.

/// Bad command line (clap's own code).
pub const USAGE: i32 = 2;
/// No such request, or it is decided already (EX_DATAERR).
pub const REQUEST: i32 = 65;
/// The backend cannot be used here: Docker unreachable, base image or
/// runtime missing (EX_UNAVAILABLE).
pub const UNAVAILABLE: i32 = 69;
/// bot-bottle failed while doing its work (EX_SOFTWARE).
pub const SOFTWARE: i32 = 70;
/// Not started: no confirmation (no terminal and no `-y`, or the person
/// answered no) (EX_NOPERM).
pub const NOT_CONFIRMED: i32 = 77;
/// The manifest is missing or invalid, or names no such agent (EX_CONFIG).
pub const CONFIG: i32 = 78;
