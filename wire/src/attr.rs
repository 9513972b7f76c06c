//! Data attributes (RFC 2408 section 3.3) in TV and TLV form, and the helpers
//! the typed attribute lists are built from.

use crate::codec::{put_len16, put_u16, Reader};
use crate::consts::{limits::MAX_ATTRIBUTES, ATTRIBUTE_FORMAT_TV};
use crate::error::{err, ErrorKind, Result};

/// The value of one data attribute, in the form it had on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrValue<'a> {
    /// TV form: a 2-octet value in the attribute header.
    Basic(u16),
    /// TLV form: a length-prefixed value.
    Variable(&'a [u8]),
}

/// One data attribute: type (without the format bit) and value.
///
/// Typed attribute lists keep attributes they do not know as these, in
/// order, and emit them back unchanged ("skip and keep", `docs/WIRE.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataAttribute<'a> {
    /// Attribute type, 15 bits.
    pub attr_type: u16,
    /// Attribute value.
    pub value: AttrValue<'a>,
}

impl<'a> DataAttribute<'a> {
    /// Parses one attribute from the reader.
    pub(crate) fn parse(r: &mut Reader<'a>, field: &'static str) -> Result<Self> {
        let word = r.u16(field)?;
        let attr_type = word & !ATTRIBUTE_FORMAT_TV;
        if word & ATTRIBUTE_FORMAT_TV != 0 {
            Ok(Self {
                attr_type,
                value: AttrValue::Basic(r.u16(field)?),
            })
        } else {
            let len = usize::from(r.u16(field)?);
            let mut body = r.sub(len, field)?;
            Ok(Self {
                attr_type,
                value: AttrValue::Variable(body.rest()),
            })
        }
    }

    /// Appends the attribute to `out`.
    pub(crate) fn emit(&self, out: &mut Vec<u8>, field: &'static str) -> Result<()> {
        if self.attr_type & ATTRIBUTE_FORMAT_TV != 0 {
            return Err(err(ErrorKind::BadValue, field));
        }
        match self.value {
            AttrValue::Basic(v) => {
                put_u16(out, self.attr_type | ATTRIBUTE_FORMAT_TV);
                put_u16(out, v);
            }
            AttrValue::Variable(bytes) => {
                put_u16(out, self.attr_type);
                put_len16(out, bytes.len(), field)?;
                out.extend_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// The value as an unsigned integer: TV directly, TLV as 1 to 8 octets
    /// big-endian. Peers differ in which form they use for integers, so both
    /// are accepted (gdoi-wire.md section 1.4).
    pub fn int(&self, field: &'static str) -> Result<u64> {
        match self.value {
            AttrValue::Basic(v) => Ok(u64::from(v)),
            AttrValue::Variable(bytes) => {
                if bytes.is_empty() || bytes.len() > 8 {
                    return Err(err(ErrorKind::BadValue, field));
                }
                Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
            }
        }
    }

    /// The value as an integer that must fit 16 bits.
    pub fn int16(&self, field: &'static str) -> Result<u16> {
        u16::try_from(self.int(field)?).map_err(|_| err(ErrorKind::BadValue, field))
    }

    /// The value as an integer that must fit 32 bits.
    pub fn int32(&self, field: &'static str) -> Result<u32> {
        u32::try_from(self.int(field)?).map_err(|_| err(ErrorKind::BadValue, field))
    }

    /// The value as bytes; a TV attribute where bytes are required is a bad value.
    pub fn bytes(&self, field: &'static str) -> Result<&'a [u8]> {
        match self.value {
            AttrValue::Variable(b) => Ok(b),
            AttrValue::Basic(_) => Err(err(ErrorKind::BadValue, field)),
        }
    }
}

/// Walks an attribute list that fills `buf`, calling `f` for each attribute.
/// Enforces [`MAX_ATTRIBUTES`].
pub(crate) fn for_each<'a>(
    buf: &'a [u8],
    field: &'static str,
    mut f: impl FnMut(DataAttribute<'a>) -> Result<()>,
) -> Result<()> {
    let mut r = Reader::new(buf);
    let mut count = 0usize;
    while !r.is_empty() {
        count += 1;
        if count > MAX_ATTRIBUTES {
            return Err(err(ErrorKind::TooMany, field));
        }
        f(DataAttribute::parse(&mut r, field)?)?;
    }
    Ok(())
}

/// Stores `v` into an attribute slot that may be set once.
pub(crate) fn set_once<T>(slot: &mut Option<T>, v: T, field: &'static str) -> Result<()> {
    if slot.is_some() {
        return Err(err(ErrorKind::Duplicate, field));
    }
    *slot = Some(v);
    Ok(())
}

/// Emits a TV attribute.
pub(crate) fn emit_basic(out: &mut Vec<u8>, attr_type: u16, v: u16) {
    put_u16(out, attr_type | ATTRIBUTE_FORMAT_TV);
    put_u16(out, v);
}

/// Emits a TLV attribute.
pub(crate) fn emit_var(
    out: &mut Vec<u8>,
    attr_type: u16,
    v: &[u8],
    field: &'static str,
) -> Result<()> {
    put_u16(out, attr_type & !ATTRIBUTE_FORMAT_TV);
    put_len16(out, v.len(), field)?;
    out.extend_from_slice(v);
    Ok(())
}

/// Emits an integer attribute registered as variable: TV when it fits 16
/// bits (RFC 2407 section 4.5 allows it for SA Life Duration), else 4-octet TLV.
pub(crate) fn emit_int_compact(out: &mut Vec<u8>, attr_type: u16, v: u32) {
    match u16::try_from(v) {
        Ok(short) => emit_basic(out, attr_type, short),
        Err(_) => {
            put_u16(out, attr_type & !ATTRIBUTE_FORMAT_TV);
            put_u16(out, 4);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Emits an integer attribute as a 4-octet TLV.
pub(crate) fn emit_int32(out: &mut Vec<u8>, attr_type: u16, v: u32) {
    put_u16(out, attr_type & !ATTRIBUTE_FORMAT_TV);
    put_u16(out, 4);
    out.extend_from_slice(&v.to_be_bytes());
}

/// Emits a list of kept (unknown) attributes.
pub(crate) fn emit_all(
    out: &mut Vec<u8>,
    attrs: &[DataAttribute<'_>],
    field: &'static str,
) -> Result<()> {
    attrs.iter().try_for_each(|a| a.emit(out, field))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn parse_tv_and_tlv() {
        let bytes = [0x80, 0x01, 0x00, 0x07, 0x00, 0x04, 0x00, 0x02, 0xab, 0xcd];
        let mut seen = vec![];
        for_each(&bytes, "t", |a| {
            seen.push(a);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen[0].attr_type, 1);
        assert_eq!(seen[0].value, AttrValue::Basic(7));
        assert_eq!(seen[1].attr_type, 4);
        assert_eq!(seen[1].value, AttrValue::Variable(&[0xab, 0xcd]));
        assert_eq!(seen[1].int("t").unwrap(), 0xabcd);
    }

    #[test]
    fn lying_tlv_length_is_rejected() {
        let bytes = [0x00, 0x04, 0x00, 0x05, 0xab, 0xcd];
        let e = for_each(&bytes, "t", |_| Ok(())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadLength);
        let short = [0x80, 0x01, 0x00];
        assert_eq!(
            for_each(&short, "t", |_| Ok(())).unwrap_err().kind,
            ErrorKind::Truncated
        );
    }

    #[test]
    fn too_many_attributes_is_rejected() {
        let bytes: Vec<u8> = (0..=MAX_ATTRIBUTES)
            .flat_map(|_| [0x80, 0x01, 0, 1])
            .collect();
        let e = for_each(&bytes, "t", |_| Ok(())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooMany);
    }

    #[test]
    fn integer_widths() {
        let a = DataAttribute {
            attr_type: 1,
            value: AttrValue::Variable(&[0; 9]),
        };
        assert_eq!(a.int("t").unwrap_err().kind, ErrorKind::BadValue);
        let a = DataAttribute {
            attr_type: 1,
            value: AttrValue::Variable(&[1, 0, 0]),
        };
        assert_eq!(a.int16("t").unwrap_err().kind, ErrorKind::BadValue);
        assert_eq!(a.int32("t").unwrap(), 0x10000);
    }
}
