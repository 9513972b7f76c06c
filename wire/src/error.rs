//! Small, `Copy` error values for the parse and emit paths.

use core::fmt;

/// What went wrong while parsing or emitting.
///
/// Every variant maps to one ISAKMP notification (see [`ErrorKind::notify`]),
/// so an engine can answer a malformed message without inspecting strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The buffer ended before the field did.
    Truncated,
    /// A length field disagrees with the buffer or with its parent: it lies,
    /// is smaller than its own header, or overflows the enclosing payload.
    BadLength,
    /// The input is larger than a codec limit (see [`crate::limits`]), or a
    /// value does not fit its wire field on emit.
    TooLarge,
    /// More items than a codec limit allows (payloads, attributes, key packets).
    TooMany,
    /// Bytes left over after a structure that must fill its container.
    TrailingBytes,
    /// A value the field cannot hold (wrong version, wrong size for its type, ...).
    BadValue,
    /// An item the codec cannot frame or must not ignore: an unknown DOI, an
    /// unknown SA layout, an unknown D3P timestamp type. See `docs/WIRE.md`,
    /// "Unknown items".
    Unsupported,
    /// An attribute or payload that may appear once appeared twice.
    Duplicate,
    /// Nested payloads out of the order RFC 6407 section 5.1 requires.
    OutOfOrder,
    /// A required item is absent.
    Missing,
}

impl ErrorKind {
    /// The ISAKMP notification (RFC 2408 section 3.14.1) an engine should
    /// answer with when a peer's message fails with this kind.
    pub const fn notify(self) -> crate::consts::NotifyType {
        use crate::consts::NotifyType as N;
        match self {
            Self::Unsupported => N::INVALID_PAYLOAD_TYPE,
            Self::BadValue | Self::Duplicate | Self::OutOfOrder | Self::Missing => {
                N::BAD_PROPOSAL_SYNTAX
            }
            Self::Truncated
            | Self::BadLength
            | Self::TooLarge
            | Self::TooMany
            | Self::TrailingBytes => N::PAYLOAD_MALFORMED,
        }
    }

    const fn describe(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadLength => "bad length",
            Self::TooLarge => "too large",
            Self::TooMany => "too many items",
            Self::TrailingBytes => "trailing bytes",
            Self::BadValue => "bad value",
            Self::Unsupported => "unsupported",
            Self::Duplicate => "duplicate",
            Self::OutOfOrder => "out of order",
            Self::Missing => "missing",
        }
    }
}

/// A parse or emit failure: what went wrong and in which wire field.
///
/// `field` is a stable dotted path such as `"sa_kek.src_id.length"`; tests,
/// counters and log lines use it. The value is two words and `Copy`, so the
/// hot parse path never allocates to report an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The wire field that failed.
    pub field: &'static str,
}

impl Error {
    /// An error of `kind` in `field`.
    pub const fn new(kind: ErrorKind, field: &'static str) -> Self {
        Self { kind, field }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.kind.describe(), self.field)
    }
}

impl std::error::Error for Error {}

/// Result alias used throughout the codec.
pub type Result<T> = core::result::Result<T, Error>;

/// Shorthand constructor used by the parsers.
pub(crate) const fn err(kind: ErrorKind, field: &'static str) -> Error {
    Error::new(kind, field)
}
