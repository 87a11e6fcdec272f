//! CSV cells (RFC 4180) for the exports: payout batches and reports.

/// Text a person typed that a spreadsheet would take for a formula (`=`,
/// `+`, `-`, `@`, a tab or a carriage return first) is prefixed with `'`.
pub(crate) fn text_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

/// RFC 4180: a field with a comma, a quote or a line break is quoted, its
/// quotes doubled.
pub(crate) fn quote(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
