//! Payloads with a flat body: KE, ID, CERT, CERTREQ, HASH, SIG, NONCE,
//! Vendor ID (RFC 2408 sections 3.7-3.16) and SEQ (RFC 6407 section 5.7).

use crate::codec::{put_u16, put_u32, put_u8, Reader};
use crate::consts::{CertEncoding, IdType};
use crate::error::{err, ErrorKind, Result};
use crate::id::Identity;

fn non_empty<'a>(body: &'a [u8], field: &'static str) -> Result<&'a [u8]> {
    if body.is_empty() {
        Err(err(ErrorKind::BadLength, field))
    } else {
        Ok(body)
    }
}

macro_rules! opaque_payload {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a [u8]);

        impl<'a> $name<'a> {
            /// Parses the body; an empty body is rejected.
            pub fn parse(body: &'a [u8]) -> Result<Self> {
                non_empty(body, $field).map(Self)
            }

            /// Appends the body.
            pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
                non_empty(self.0, $field)?;
                out.extend_from_slice(self.0);
                Ok(())
            }
        }
    };
}

opaque_payload!(
    /// Key Exchange data: the DH public value (RFC 2408 section 3.7).
    KeyExchange,
    "ke.data"
);
opaque_payload!(
    /// Hash data (RFC 2408 section 3.11; HASH(1)-(4) of RFC 6407 section 3.1).
    Hash,
    "hash.data"
);
opaque_payload!(
    /// Signature data (RFC 2408 section 3.12; GROUPKEY-PUSH SIG, RFC 6407 section 4).
    Signature,
    "sig.data"
);
opaque_payload!(
    /// Nonce data (RFC 2408 section 3.13). Length policy (8-256 octets) is the engines'.
    Nonce,
    "nonce.data"
);
opaque_payload!(
    /// Vendor ID (RFC 2408 section 3.16); see [`crate::gkm_vid`] for GKM's own.
    VendorId,
    "vendor_id.data"
);

/// Identification payload (RFC 2408 section 3.8, IPsec DOI layout RFC 2407
/// section 4.6.2): ID type, protocol, port, data. In GROUPKEY-PULL it names
/// the group (ID_KEY_ID, 4-octet group number); in an RFC 8263 ACK the GM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdPayload<'a> {
    /// IP protocol (0 = any).
    pub protocol: u8,
    /// Port (0 = any).
    pub port: u16,
    /// The identity; its type is the payload's ID type.
    pub identity: Identity<'a>,
}

impl<'a> IdPayload<'a> {
    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let id_type = IdType(r.u8("id.type")?);
        let protocol = r.u8("id.protocol")?;
        let port = r.u16("id.port")?;
        let identity = Identity::parse(id_type, r.rest(), "id.data")?;
        Ok(Self {
            protocol,
            port,
            identity,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.identity.data_len() == 0 {
            return Err(err(ErrorKind::BadLength, "id.data"));
        }
        put_u8(out, self.identity.id_type().0);
        put_u8(out, self.protocol);
        put_u16(out, self.port);
        self.identity.emit_data(out);
        Ok(())
    }
}

/// Certificate payload (RFC 2408 section 3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cert<'a> {
    /// Certificate encoding (4 = X.509 signature).
    pub encoding: CertEncoding,
    /// The certificate (DER for X.509).
    pub data: &'a [u8],
}

impl<'a> Cert<'a> {
    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let encoding = CertEncoding(r.u8("cert.encoding")?);
        let data = non_empty(r.rest(), "cert.data")?;
        Ok(Self { encoding, data })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u8(out, self.encoding.0);
        out.extend_from_slice(non_empty(self.data, "cert.data")?);
        Ok(())
    }
}

/// Certificate Request payload (RFC 2408 section 3.10). An empty authority
/// means "any CA".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertReq<'a> {
    /// Requested certificate type.
    pub encoding: CertEncoding,
    /// Acceptable CA (DER distinguished name), possibly empty.
    pub authority: &'a [u8],
}

impl<'a> CertReq<'a> {
    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let encoding = CertEncoding(r.u8("certreq.type")?);
        Ok(Self {
            encoding,
            authority: r.rest(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u8(out, self.encoding.0);
        out.extend_from_slice(self.authority);
        Ok(())
    }
}

/// Sequence Number payload (RFC 6407 section 5.7): the 4-octet SEQ of the
/// rekey SA. Any other body length is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq(pub u32);

impl Seq {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        if body.len() > 4 {
            return Err(err(ErrorKind::BadLength, "seq.number"));
        }
        Ok(Self(r.u32("seq.number")?))
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        put_u32(out, self.0);
    }
}
