//! Ownership state and the as-of join: every control-plane event is applied to [`OwnershipState`],
//! and each traffic event is resolved through hostname/port → endpoint → agent session →
//! credential → owner **as of the event's time** ([`OwnershipState::resolve`]).
//!
//! The state keeps intervals, not just the latest value, because hostnames are reused, sessions end,
//! credentials are revoked and bots are deactivated: a traffic event is judged by the world as it
//! was when it happened, whatever order the control events arrived in.

mod evict;
mod intern;
mod resolve;
mod state;

pub use evict::{Evicted, EvictionConfig};
pub use resolve::{Flag, Resolution, UnattributedReason};
pub use state::{ApplyOutcome, OwnershipState, StateStats};
