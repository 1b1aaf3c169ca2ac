//! Client connections below the HTTP layer: admission (a cap in total and per address) and
//! the deadlines Pingora does not keep by itself.
//!
//! A connection meets the pieces in this order:
//! - `slots.rs`: [`Slots`] admits it or says which cap [`Refused`] it; the [`Slot`] it gets
//!   frees its place when dropped.
//! - `listener.rs`: [`Listener`], the proxy service's application, serves each connection
//!   in a small task of its own: it takes that slot, then serves the connection's requests
//!   one by one through Pingora's proxy, or hands the connection to a [`Takeover`] a request
//!   left (a WebSocket) once Pingora is done with that request.
//! - `head.rs`: on HTTP/1, [`Timed`] wraps the stream and bounds each request head by the
//!   [`Deadlines`] (Pingora only times each read), answering 408 or 431 when one is late or
//!   too large; on HTTP/2 it bounds the preface and, through `h2frames.rs`, the client's
//!   control frames.

// The files are private and their items re-exported here: `crate::conn::Timed` and the
// like stay the one path to each, for the crate and for the fuzz targets.
mod h2frames;
mod head;
mod listener;
mod slots;

pub use h2frames::H2Frames;
pub use head::{Deadlines, Timed};
pub use listener::{Handover, Listener, Takeover};
pub use slots::{Refused, Slot, Slots};

use std::time::Duration;

/// How long a refusal may take to write before the connection is dropped anyway (both a
/// refused connection's 503 and a refused head's 408 or 431).
pub(crate) const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
