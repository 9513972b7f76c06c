//! GKM's Vendor ID: an agent's version and interoperability feature bits
//! (seed section 4; DESIGN.md "GM class").
//!
//! ```text
//! "GKM/GDOI/VID" (12) | major (1) | minor (1) | mini (1) | reserved (1) | features (4, big-endian)
//! ```

use crate::codec::{put_u32, put_u8, Reader};
use crate::error::{err, ErrorKind, Result};

/// The 12 octets every GKM Vendor ID starts with.
pub const GKM_VID_MAGIC: [u8; 12] = *b"GKM/GDOI/VID";
/// Length of a GKM Vendor ID.
pub const GKM_VID_LEN: usize = 20;

/// Interoperability features a GM or KS supports (seed section 4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct FeatureBits(pub u32);

impl FeatureBits {
    /// IP-D3P delay detection (`show crypto gkm feature ip-d3p`).
    pub const IP_D3P: Self = Self(1 << 0);
    /// RFC 8263 rekey ACK (`show crypto gkm feature gdoi-interop-ack`).
    pub const GDOI_INTEROP_ACK: Self = Self(1 << 1);
    /// Activation time delay in GAP.
    pub const ATD: Self = Self(1 << 2);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Union.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// A GDOI version `major.minor.mini`, as the seed prints it (`1.0.11`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct GdoiVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Mini.
    pub mini: u8,
}

impl core::fmt::Display for GdoiVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.mini)
    }
}

/// GKM Vendor ID contents.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct GkmVendorId {
    /// GDOI version.
    pub version: GdoiVersion,
    /// Supported features; unknown bits are kept.
    pub features: FeatureBits,
}

impl GkmVendorId {
    /// `Ok(None)` when `vid` is some other vendor's ID; an error when it
    /// starts with GKM's magic but is malformed.
    pub fn parse(vid: &[u8]) -> Result<Option<Self>> {
        if !vid.starts_with(&GKM_VID_MAGIC) {
            return Ok(None);
        }
        if vid.len() != GKM_VID_LEN {
            return Err(err(ErrorKind::BadLength, "gkm_vid"));
        }
        let mut r = Reader::new(vid);
        let _magic = r.take(GKM_VID_MAGIC.len(), "gkm_vid.magic")?;
        let version = GdoiVersion {
            major: r.u8("gkm_vid.major")?,
            minor: r.u8("gkm_vid.minor")?,
            mini: r.u8("gkm_vid.mini")?,
        };
        let _reserved = r.u8("gkm_vid.reserved")?;
        let features = FeatureBits(r.u32("gkm_vid.features")?);
        Ok(Some(Self { version, features }))
    }

    /// The Vendor ID payload body.
    pub fn to_bytes(&self) -> [u8; GKM_VID_LEN] {
        let mut v = Vec::with_capacity(GKM_VID_LEN);
        v.extend_from_slice(&GKM_VID_MAGIC);
        put_u8(&mut v, self.version.major);
        put_u8(&mut v, self.version.minor);
        put_u8(&mut v, self.version.mini);
        put_u8(&mut v, 0);
        put_u32(&mut v, self.features.0);
        let mut out = [0u8; GKM_VID_LEN];
        out.copy_from_slice(&v);
        out
    }
}
