//! Bounded reading and length-patched writing: the only place that touches
//! raw offsets. Every other module goes through [`Reader`] and the `put_*`
//! helpers, so no accessor elsewhere can index out of bounds.

use crate::error::{err, ErrorKind, Result};

/// A shrinking view over an input buffer (model: rustls `codec::Reader`).
///
/// Each `take` either returns exactly the bytes asked for or a
/// [`ErrorKind::Truncated`] error naming the field; nothing else can fail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) const fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or(err(ErrorKind::Truncated, field))?;
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Reads a length-prefixed body: `len` octets that must lie inside the
    /// remaining buffer; a length that overruns it is a lying length.
    pub(crate) fn sub(&mut self, len: usize, field: &'static str) -> Result<Reader<'a>> {
        if len > self.buf.len() {
            return Err(err(ErrorKind::BadLength, field));
        }
        self.take(len, field).map(Reader::new)
    }

    /// Succeeds only if the structure consumed its whole container.
    pub(crate) fn finish(&self, field: &'static str) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(err(ErrorKind::TrailingBytes, field))
        }
    }
}

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Reserves a 2-octet length field and returns its position for [`patch_len16`].
pub(crate) fn reserve_len16(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

/// Writes `out.len() - start` into the 2-octet field at `at`.
///
/// `start` is where the counted region begins (the payload header for
/// ISAKMP payloads, the field after the length for ID data).
pub(crate) fn patch_len16(
    out: &mut [u8],
    at: usize,
    start: usize,
    field: &'static str,
) -> Result<()> {
    let len = out
        .len()
        .checked_sub(start)
        .ok_or(err(ErrorKind::BadLength, field))?;
    let len = u16::try_from(len).map_err(|_| err(ErrorKind::TooLarge, field))?;
    let slot = out
        .get_mut(at..at.saturating_add(2))
        .ok_or(err(ErrorKind::BadLength, field))?;
    slot.copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes a length that must fit in one octet.
pub(crate) fn put_len8(out: &mut Vec<u8>, len: usize, field: &'static str) -> Result<()> {
    let len = u8::try_from(len).map_err(|_| err(ErrorKind::TooLarge, field))?;
    out.push(len);
    Ok(())
}

/// Writes a length that must fit in two octets.
pub(crate) fn put_len16(out: &mut Vec<u8>, len: usize, field: &'static str) -> Result<()> {
    let len = u16::try_from(len).map_err(|_| err(ErrorKind::TooLarge, field))?;
    put_u16(out, len);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn take_past_end_is_truncated_and_leaves_reader_unchanged() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take(4, "x").unwrap_err().kind, ErrorKind::Truncated);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.u16("y").unwrap(), 0x0102);
        assert_eq!(r.finish("z").unwrap_err().kind, ErrorKind::TrailingBytes);
    }

    #[test]
    fn sub_with_lying_length_is_bad_length() {
        let mut r = Reader::new(&[0; 4]);
        assert_eq!(r.sub(5, "x").unwrap_err().kind, ErrorKind::BadLength);
    }

    #[test]
    fn patch_len16_rejects_overflow() {
        let mut out = vec![0u8; 2];
        out.resize(70_000, 0);
        assert_eq!(
            patch_len16(&mut out, 0, 0, "x").unwrap_err().kind,
            ErrorKind::TooLarge
        );
    }
}
