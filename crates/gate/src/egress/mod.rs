//! The egress role: the bottle's only way to the network (DESIGN.md §5).
//!
//! [`proxy`] takes the agent's requests, [`policy`] decides, [`intercept`]
//! opens allowed tunnels, [`forward`] sends each request on with its
//! [`credentials`], through [`upstream`] connections.

pub mod body;
pub mod credentials;
pub mod forward;
pub mod intercept;
pub mod leak;
pub mod live;
pub mod policy;
pub mod proxy;
pub mod ranges;
pub mod upstream;
pub mod websocket;

pub use live::Live;
pub use policy::Policy;
pub use proxy::Egress;
