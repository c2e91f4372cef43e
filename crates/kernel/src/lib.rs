//! The vocabulary every Emporium crate shares: prefixed ids, money, the API error
//! shape, the event envelope, cursor pages and the typed configuration.
//! It does no I/O of its own.

pub mod address;
pub mod auth;
pub mod config;
pub mod email;
pub mod error;
pub mod event;
pub mod id;
pub mod money;
pub mod news;
pub mod net;
pub mod page;

pub use error::{ApiError, ErrorType};
pub use event::Envelope;
pub use money::{Currency, Money};
pub use page::{Page, PageParams};
