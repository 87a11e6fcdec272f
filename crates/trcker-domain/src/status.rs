//! The conversion's life: an explicit state machine.
//!
//! ```text
//! pending ──► approved ──► refunded
//!    │            └──────► chargeback
//!    ├──────► rejected
//!    └──────► refunded / chargeback
//! ```
//! A conversion is created `approved` or `pending` (or `rejected` when the merchant
//! says so up front). Leaving `approved` for `refunded` or `chargeback` reverses the
//! commission; `rejected`, `refunded` and `chargeback` are final.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversionStatus {
    Pending,
    Approved,
    Rejected,
    Refunded,
    Chargeback,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of approved, pending, rejected, refunded, chargeback")]
pub struct StatusError;

impl ConversionStatus {
    pub fn parse(s: &str) -> Result<Self, StatusError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "pending" => Self::Pending,
            "approved" | "approve" | "1" => Self::Approved,
            "rejected" | "reject" | "declined" => Self::Rejected,
            "refunded" | "refund" => Self::Refunded,
            "chargeback" => Self::Chargeback,
            _ => return Err(StatusError),
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Refunded => "refunded",
            Self::Chargeback => "chargeback",
        }
    }

    /// Whether a conversion may move from `self` to `to`.
    pub fn can_move_to(self, to: ConversionStatus) -> bool {
        use ConversionStatus::*;
        matches!(
            (self, to),
            (Pending, Approved)
                | (Pending, Rejected)
                | (Pending, Refunded)
                | (Pending, Chargeback)
                | (Approved, Refunded)
                | (Approved, Chargeback)
        )
    }

    /// Whether the commission of a conversion in this state is owed to the affiliate.
    pub fn earns_commission(self) -> bool {
        matches!(self, Self::Pending | Self::Approved)
    }
}

impl fmt::Display for ConversionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ConversionStatus::*;
    use super::*;

    #[test]
    fn transitions() {
        assert!(Pending.can_move_to(Approved));
        assert!(Approved.can_move_to(Refunded));
        assert!(!Approved.can_move_to(Pending));
        assert!(!Rejected.can_move_to(Approved));
        assert!(!Refunded.can_move_to(Approved));
        assert!(!Approved.can_move_to(Approved));
        assert_eq!(ConversionStatus::parse("APPROVED"), Ok(Approved));
        assert!(ConversionStatus::parse("paid").is_err());
    }
}
