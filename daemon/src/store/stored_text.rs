//! Enums stored as TEXT: the statuses and kinds that the store's columns hold.
//! Each variant's text is written once, here, and serde, sqlx and `as_str` all
//! use it, so a value on disk and the one a query compares with cannot drift
//! apart, and a misspelt status is a compile error instead of a row that no
//! query ever finds.

/// Declares an enum stored as TEXT, each variant with its text on disk:
/// `Variant = "text"`. It (de)serialises, binds and decodes as that text, and
/// gets `as_str`, `parse` and `ALL`; `Display` pads like a `str`.
macro_rules! stored_text {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type)]
        // What PostgreSQL calls the type; SQLite binds and decodes it as a string.
        #[sqlx(type_name = "text")]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] #[sqlx(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The text on disk.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

pub(super) use stored_text;
