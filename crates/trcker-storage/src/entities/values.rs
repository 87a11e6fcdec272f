//! The typed values of columns that hold one of a fixed set of words, or a
//! currency code: stored as text, read back as Rust types, so that no code
//! compares them as strings.

use trcker_domain::money::Currency;

/// A stored word that is none of its column's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {column}")]
pub struct UnknownValue {
    pub column: &'static str,
    pub value: String,
}

/// An enum stored as one of its words (`as_str`), parsed back with `FromStr`.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($column:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sea_orm::DeriveValueType)]
        #[sea_orm(value_type = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::entities::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::entities::UnknownValue {
                        column: $column,
                        value: s.to_owned(),
                    }),
                }
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// Whether a program, affiliate, tracking link or coupon takes part: a
    /// paused one sends clicks to the program's fallback URL and its
    /// conversions are kept unattributed.
    pub enum Activity ("status") {
        Active = "active",
        Paused = "paused",
    }
}

/// A currency column: the ISO 4217 code as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sea_orm::DeriveValueType)]
#[sea_orm(
    value_type = "String",
    from_str = "CurrencyCode::parse",
    to_str = "CurrencyCode::code"
)]
pub struct CurrencyCode(pub Currency);

impl CurrencyCode {
    fn parse(s: &str) -> Result<CurrencyCode, trcker_domain::MoneyError> {
        Currency::parse(s).map(CurrencyCode)
    }

    fn code(&self) -> String {
        self.0.code().to_owned()
    }
}

impl std::ops::Deref for CurrencyCode {
    type Target = Currency;
    fn deref(&self) -> &Currency {
        &self.0
    }
}

impl From<Currency> for CurrencyCode {
    fn from(c: Currency) -> Self {
        CurrencyCode(c)
    }
}

impl std::fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.code())
    }
}
