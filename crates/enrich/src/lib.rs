//! Ownership state and the as-of join: every control-plane event is applied to [`OwnershipState`],
//! and each traffic event is resolved through hostname/port → endpoint → agent session →
//! credential → owner **as of the event's time** ([`OwnershipState::resolve`]).
//!
//! The state keeps intervals, not just the latest value, because hostnames are reused, sessions end,
//! credentials are revoked and bots are deactivated: a traffic event is judged by the world as it
//! was when it happened, whatever order the control events arrived in.
//!
//! It is sized for millions of live sessions and endpoints (about 250 bytes per session plus
//! endpoint, see `BENCHMARKS.md`): every id and hostname is interned once and referred to by a
//! 4-byte symbol, and times are kept as microseconds. Sessions and endpoints that ended more than a
//! grace period ago are removed by [`OwnershipState::evict_ended`] (default grace [`DEFAULT_EVICTION_GRACE_MS`]); traffic
//! on them resolved more than that grace after their end is no longer attributed to them, so the
//! grace must exceed the allowed lateness of traffic.

mod evict;
mod intern;
mod resolve;
mod state;

pub use evict::{Evicted, DEFAULT_EVICTION_GRACE_MS};
pub use resolve::{Flag, Resolution, ResolutionRef, UnattributedReason};
pub use state::{ApplyOutcome, OwnershipState, StateStats};
