//! Identification data (RFC 2407 section 4.6.2) shared by the ID payload,
//! the SA KEK source/destination and the SA TEK traffic selectors.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::codec::Reader;
use crate::consts::IdType;
use crate::error::{err, ErrorKind, Result};

/// A typed identity. Address types are checked against their exact length;
/// the other types carry their octets. Types the codec does not know are
/// kept as [`Identity::Other`] (skip and keep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity<'a> {
    /// ID_IPV4_ADDR.
    Ipv4Addr(Ipv4Addr),
    /// ID_IPV4_ADDR_SUBNET: address and mask.
    Ipv4Subnet(Ipv4Addr, Ipv4Addr),
    /// ID_IPV4_ADDR_RANGE: first and last address.
    Ipv4Range(Ipv4Addr, Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6Addr(Ipv6Addr),
    /// ID_IPV6_ADDR_SUBNET: address and mask.
    Ipv6Subnet(Ipv6Addr, Ipv6Addr),
    /// ID_IPV6_ADDR_RANGE: first and last address.
    Ipv6Range(Ipv6Addr, Ipv6Addr),
    /// ID_FQDN.
    Fqdn(&'a [u8]),
    /// ID_USER_FQDN.
    UserFqdn(&'a [u8]),
    /// ID_DER_ASN1_DN.
    DerAsn1Dn(&'a [u8]),
    /// ID_DER_ASN1_GN.
    DerAsn1Gn(&'a [u8]),
    /// ID_KEY_ID: opaque; a GDOI group ID is 4 octets (see [`Identity::group_id`]).
    KeyId(&'a [u8]),
    /// Any other type, kept as is.
    Other(IdType, &'a [u8]),
}

fn v4(r: &mut Reader<'_>, field: &'static str) -> Result<Ipv4Addr> {
    Ok(Ipv4Addr::from(r.array::<4>(field)?))
}

fn v6(r: &mut Reader<'_>, field: &'static str) -> Result<Ipv6Addr> {
    Ok(Ipv6Addr::from(r.array::<16>(field)?))
}

impl<'a> Identity<'a> {
    /// The group number if this is a 4-octet ID_KEY_ID.
    pub fn group_id(&self) -> Option<u32> {
        match self {
            Self::KeyId(b) => <[u8; 4]>::try_from(*b).ok().map(u32::from_be_bytes),
            _ => None,
        }
    }

    /// The identification type this identity is sent as.
    pub const fn id_type(&self) -> IdType {
        match self {
            Self::Ipv4Addr(_) => IdType::IPV4_ADDR,
            Self::Ipv4Subnet(..) => IdType::IPV4_ADDR_SUBNET,
            Self::Ipv4Range(..) => IdType::IPV4_ADDR_RANGE,
            Self::Ipv6Addr(_) => IdType::IPV6_ADDR,
            Self::Ipv6Subnet(..) => IdType::IPV6_ADDR_SUBNET,
            Self::Ipv6Range(..) => IdType::IPV6_ADDR_RANGE,
            Self::Fqdn(_) => IdType::FQDN,
            Self::UserFqdn(_) => IdType::USER_FQDN,
            Self::DerAsn1Dn(_) => IdType::DER_ASN1_DN,
            Self::DerAsn1Gn(_) => IdType::DER_ASN1_GN,
            Self::KeyId(_) => IdType::KEY_ID,
            Self::Other(t, _) => *t,
        }
    }

    /// Parses identification data of type `id_type` that fills `data`.
    pub fn parse(id_type: IdType, data: &'a [u8], field: &'static str) -> Result<Self> {
        let mut r = Reader::new(data);
        let id = match id_type {
            IdType::IPV4_ADDR => Self::Ipv4Addr(v4(&mut r, field)?),
            IdType::IPV4_ADDR_SUBNET => Self::Ipv4Subnet(v4(&mut r, field)?, v4(&mut r, field)?),
            IdType::IPV4_ADDR_RANGE => Self::Ipv4Range(v4(&mut r, field)?, v4(&mut r, field)?),
            IdType::IPV6_ADDR => Self::Ipv6Addr(v6(&mut r, field)?),
            IdType::IPV6_ADDR_SUBNET => Self::Ipv6Subnet(v6(&mut r, field)?, v6(&mut r, field)?),
            IdType::IPV6_ADDR_RANGE => Self::Ipv6Range(v6(&mut r, field)?, v6(&mut r, field)?),
            IdType::FQDN => Self::Fqdn(non_empty(r.rest(), field)?),
            IdType::USER_FQDN => Self::UserFqdn(non_empty(r.rest(), field)?),
            IdType::DER_ASN1_DN => Self::DerAsn1Dn(non_empty(r.rest(), field)?),
            IdType::DER_ASN1_GN => Self::DerAsn1Gn(non_empty(r.rest(), field)?),
            IdType::KEY_ID => Self::KeyId(non_empty(r.rest(), field)?),
            other => Self::Other(other, r.rest()),
        };
        // An address type with extra octets is a length that lies about its type.
        if !r.is_empty() {
            return Err(err(ErrorKind::BadLength, field));
        }
        Ok(id)
    }

    /// Length of the identification data in octets.
    pub fn data_len(&self) -> usize {
        match self {
            Self::Ipv4Addr(_) => 4,
            Self::Ipv4Subnet(..) | Self::Ipv4Range(..) => 8,
            Self::Ipv6Addr(_) => 16,
            Self::Ipv6Subnet(..) | Self::Ipv6Range(..) => 32,
            Self::Fqdn(b)
            | Self::UserFqdn(b)
            | Self::DerAsn1Dn(b)
            | Self::DerAsn1Gn(b)
            | Self::KeyId(b)
            | Self::Other(_, b) => b.len(),
        }
    }

    /// Appends the identification data (without type or length) to `out`.
    pub fn emit_data(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ipv4Addr(a) => out.extend_from_slice(&a.octets()),
            Self::Ipv4Subnet(a, b) | Self::Ipv4Range(a, b) => {
                out.extend_from_slice(&a.octets());
                out.extend_from_slice(&b.octets());
            }
            Self::Ipv6Addr(a) => out.extend_from_slice(&a.octets()),
            Self::Ipv6Subnet(a, b) | Self::Ipv6Range(a, b) => {
                out.extend_from_slice(&a.octets());
                out.extend_from_slice(&b.octets());
            }
            Self::Fqdn(b)
            | Self::UserFqdn(b)
            | Self::DerAsn1Dn(b)
            | Self::DerAsn1Gn(b)
            | Self::KeyId(b)
            | Self::Other(_, b) => out.extend_from_slice(b),
        }
    }
}

fn non_empty<'a>(b: &'a [u8], field: &'static str) -> Result<&'a [u8]> {
    if b.is_empty() {
        Err(err(ErrorKind::BadLength, field))
    } else {
        Ok(b)
    }
}
