//! The egress role: the bottle's only way to the network (DESIGN.md §5).

pub mod policy;
pub mod proxy;

pub use policy::Policy;
pub use proxy::Egress;
