//! Group Associated Policy payload (RFC 6407 section 5.4) with GKM's IP-D3P
//! attributes (DESIGN.md, "IP-D3P").

use crate::attr::{self, emit_all, emit_basic, emit_int32, set_once, DataAttribute};
use crate::consts::{D3pType, GapAttribute};
use crate::error::Result;

/// GAP: group-wide policy as data attributes, no fixed fields.
///
/// Sent nested in the KS's SA (ATD, DTD, D3P) and top level by a GM in
/// GROUPKEY-PULL message 3 (SENDER_ID_REQUEST).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gap<'a> {
    /// ACTIVATION_TIME_DELAY in seconds.
    pub activation_time_delay: Option<u16>,
    /// DEACTIVATION_TIME_DELAY in seconds.
    pub deactivation_time_delay: Option<u16>,
    /// SENDER_ID_REQUEST: how many sender IDs the GM asks for.
    pub sender_id_request: Option<u16>,
    /// GKM D3P_TYPE: the IP-D3P timestamp type.
    pub d3p_type: Option<D3pType>,
    /// GKM D3P_WINDOW_MSEC: the IP-D3P window in milliseconds.
    pub d3p_window_msec: Option<u32>,
    /// Attributes the codec does not know, kept in order.
    pub unknown: Vec<DataAttribute<'a>>,
}

impl<'a> Gap<'a> {
    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut gap = Self::default();
        attr::for_each(body, "gap.attribute", |a| {
            let f = "gap.attribute";
            match GapAttribute(a.attr_type) {
                GapAttribute::ACTIVATION_TIME_DELAY => {
                    set_once(&mut gap.activation_time_delay, a.int16(f)?, f)
                }
                GapAttribute::DEACTIVATION_TIME_DELAY => {
                    set_once(&mut gap.deactivation_time_delay, a.int16(f)?, f)
                }
                GapAttribute::SENDER_ID_REQUEST => {
                    set_once(&mut gap.sender_id_request, a.int16(f)?, f)
                }
                GapAttribute::GKM_D3P_TYPE => set_once(&mut gap.d3p_type, D3pType(a.int16(f)?), f),
                GapAttribute::GKM_D3P_WINDOW_MSEC => {
                    set_once(&mut gap.d3p_window_msec, a.int32(f)?, f)
                }
                _ => {
                    gap.unknown.push(a);
                    Ok(())
                }
            }
        })?;
        Ok(gap)
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        if let Some(v) = self.activation_time_delay {
            emit_basic(out, GapAttribute::ACTIVATION_TIME_DELAY.0, v);
        }
        if let Some(v) = self.deactivation_time_delay {
            emit_basic(out, GapAttribute::DEACTIVATION_TIME_DELAY.0, v);
        }
        if let Some(v) = self.sender_id_request {
            emit_basic(out, GapAttribute::SENDER_ID_REQUEST.0, v);
        }
        if let Some(v) = self.d3p_type {
            emit_basic(out, GapAttribute::GKM_D3P_TYPE.0, v.0);
        }
        if let Some(v) = self.d3p_window_msec {
            emit_int32(out, GapAttribute::GKM_D3P_WINDOW_MSEC.0, v);
        }
        emit_all(out, &self.unknown, "gap.attribute")
    }
}
