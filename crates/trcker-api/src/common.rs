//! What the resources' DTOs share.

use poem_openapi::ApiResponse;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::types::{MaybeUndefined, ToJSON};
use trcker_domain::money::{Currency, format_minor};

/// `201 Created` with the new resource.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON> {
    #[oai(status = 201)]
    Created(Json<T>),
}

/// `Some(None)` for an explicit null, `None` when the field is absent.
pub fn patch<T>(v: MaybeUndefined<T>) -> Option<Option<T>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

/// An amount as the API shows it: a decimal string with the currency's decimals ("7.90").
pub fn money(minor: i64, currency: Currency) -> String {
    format_minor(minor, currency)
}

/// A CSV export.
#[derive(ApiResponse)]
pub enum CsvExport {
    /// RFC 4180, a header row first.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(PlainText<String>),
}
