//! Notification and Delete payloads (RFC 2408 sections 3.14 and 3.15; GDOI
//! deletes RFC 6407 section 5.9).

use crate::codec::{put_len8, put_u16, put_u32, put_u8, Reader};
use crate::consts::{limits::MAX_DELETE_SPIS, Doi, NotifyType};
use crate::error::{err, ErrorKind, Result};

/// Notification payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Notification<'a> {
    /// DOI (1 in phase 1, 2 for GDOI).
    pub doi: Doi,
    /// Protocol-ID, numbered by the DOI.
    pub protocol_id: u8,
    /// Notify message type.
    pub notify_type: NotifyType,
    /// SPI (its size is the SPI Size field), possibly empty.
    pub spi: &'a [u8],
    /// Notification data, possibly empty.
    pub data: &'a [u8],
}

impl<'a> Notification<'a> {
    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let doi = Doi(r.u32("notification.doi")?);
        let protocol_id = r.u8("notification.protocol_id")?;
        let spi_size = usize::from(r.u8("notification.spi_size")?);
        let notify_type = NotifyType(r.u16("notification.type")?);
        let spi = r.sub(spi_size, "notification.spi_size")?.rest();
        Ok(Self {
            doi,
            protocol_id,
            notify_type,
            spi,
            data: r.rest(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u32(out, self.doi.0);
        put_u8(out, self.protocol_id);
        put_len8(out, self.spi.len(), "notification.spi_size")?;
        put_u16(out, self.notify_type.0);
        out.extend_from_slice(self.spi);
        out.extend_from_slice(self.data);
        Ok(())
    }
}

/// Delete payload: one protocol, one SPI size, one or more SPIs.
///
/// In GDOI, Protocol-ID 0 with 16-octet SPIs deletes a KEK; a TEK
/// protocol ID with 4-octet SPIs deletes TEKs (RFC 6407 section 5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delete<'a> {
    /// DOI.
    pub doi: Doi,
    /// Protocol-ID, numbered by the DOI.
    pub protocol_id: u8,
    /// Size of each SPI in octets; never 0.
    pub spi_size: u8,
    /// The SPIs, concatenated; a multiple of `spi_size` long.
    pub spis: &'a [u8],
}

impl<'a> Delete<'a> {
    /// Parses the body; the SPI count must match the octets present.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let doi = Doi(r.u32("delete.doi")?);
        let protocol_id = r.u8("delete.protocol_id")?;
        let spi_size = r.u8("delete.spi_size")?;
        let count = usize::from(r.u16("delete.spi_count")?);
        if spi_size == 0 {
            return Err(err(ErrorKind::BadValue, "delete.spi_size"));
        }
        if count == 0 {
            return Err(err(ErrorKind::Missing, "delete.spi_count"));
        }
        if count > MAX_DELETE_SPIS {
            return Err(err(ErrorKind::TooMany, "delete.spi_count"));
        }
        let total = count * usize::from(spi_size);
        let spis = r.take(total, "delete.spis")?;
        r.finish("delete.spis")?;
        Ok(Self {
            doi,
            protocol_id,
            spi_size,
            spis,
        })
    }

    /// The SPIs one by one.
    pub fn iter_spis(&self) -> impl Iterator<Item = &'a [u8]> {
        self.spis.chunks_exact(usize::from(self.spi_size.max(1)))
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        let size = usize::from(self.spi_size);
        if size == 0 || self.spis.is_empty() || self.spis.len() % size != 0 {
            return Err(err(ErrorKind::BadLength, "delete.spis"));
        }
        let count = self.spis.len() / size;
        if count > MAX_DELETE_SPIS {
            return Err(err(ErrorKind::TooMany, "delete.spi_count"));
        }
        put_u32(out, self.doi.0);
        put_u8(out, self.protocol_id);
        put_u8(out, self.spi_size);
        put_u16(
            out,
            u16::try_from(count).map_err(|_| err(ErrorKind::TooMany, "delete.spi_count"))?,
        );
        out.extend_from_slice(self.spis);
        Ok(())
    }
}
