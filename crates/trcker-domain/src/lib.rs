//! Trcker's domain: the rules of affiliate tracking with no I/O.
//!
//! Everything here is pure: ids, money, currencies, slugs, commission rules,
//! postback parameters, outgoing-postback macro expansion and the checks on
//! outgoing targets. The storage, services and HTTP crates build on these types;
//! this crate never imports poem, sea-orm or apalis.

pub mod click_id;
pub mod client;
pub mod commission;
pub mod destination;
pub mod fields;
pub mod ids;
pub mod money;
pub mod postback;
pub mod protection;
pub mod secret;
pub mod slug;
pub mod status;
pub mod target;
pub mod tiers;
pub mod webhook;

pub use click_id::ClickId;
pub use commission::{Commission, CommissionRule};
pub use fields::{FieldError, Fields};
pub use money::{Currency, Money, MoneyError};
pub use slug::Slug;
pub use status::ConversionStatus;
