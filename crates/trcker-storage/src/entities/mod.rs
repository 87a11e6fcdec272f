//! sea-orm entities: thin rows, one module per table, with the typed values of
//! their columns. Behaviour lives in trcker-services.

mod values;

pub mod affiliate;
pub mod api_key;
pub mod audit;
pub mod click;
pub mod commission_plan;
pub mod conversion;
pub mod coupon;
pub mod exchange_rate;
pub mod global_key;
pub mod idempotency_key;
pub mod integration;
pub mod ledger_entry;
pub mod notification_attempt;
pub mod notification_delivery;
pub mod notification_endpoint;
pub mod payout;
pub mod postback;
pub mod program;
pub mod signing_key;
pub mod tenant;
pub mod tracking_link;

pub(crate) use values::text_enum;
pub use values::{Activity, CurrencyCode, UnknownValue};
