//! The opt-in key log (like SSLKEYLOGFILE). Off unless the operator names a
//! file; a warning says so at start-up. Two files, each in the format
//! Wireshark reads directly:
//!
//! - `PATH`: lines of Wireshark's `ikev1_decryption_table`
//!   (`<initiator cookie hex>,<phase 1 cipher key hex>`): copy it into the
//!   Wireshark configuration directory to decrypt main mode 5/6 and
//!   GROUPKEY-PULL.
//! - `PATH.esp_sa`: lines of Wireshark's `esp_sa` table, one per TEK.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gkm_proto::group::GroupKeys;
use gkm_wire::consts::{AuthAlgorithm, EspTransformId};

/// An open key log.
pub struct KeyLog {
    ike: File,
    esp: File,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open key log {}", path.display()))
}

/// The encryption algorithm as Wireshark's `esp_sa` table names it.
fn esp_algorithm(t: EspTransformId) -> &'static str {
    match t {
        EspTransformId::AES_GCM_8 => "AES-GCM with 8 octet ICV [RFC4106]",
        EspTransformId::AES_GCM_12 => "AES-GCM with 12 octet ICV [RFC4106]",
        EspTransformId::AES_CBC => "AES-CBC [RFC3602]",
        _ => "AES-GCM with 16 octet ICV [RFC4106]",
    }
}

/// The authentication algorithm as Wireshark's `esp_sa` table names it.
fn esp_authentication(a: Option<AuthAlgorithm>) -> &'static str {
    match a {
        Some(AuthAlgorithm::HMAC_SHA1) => "HMAC-SHA-1-96 [RFC2404]",
        Some(AuthAlgorithm::HMAC_SHA2_256) => "HMAC-SHA-256-128 [RFC4868]",
        _ => "NULL",
    }
}

impl KeyLog {
    /// Opens (appends to) `path` and `path.esp_sa`, mode 0600.
    pub fn open(path: &Path) -> Result<Self> {
        let mut esp_path = PathBuf::from(path);
        esp_path.as_mut_os_string().push(".esp_sa");
        Ok(Self {
            ike: open(path)?,
            esp: open(&esp_path)?,
        })
    }

    /// One phase 1 SA.
    pub fn phase1(&mut self, initiator_cookie: &[u8; 8], enc_key: &[u8]) -> Result<()> {
        writeln!(
            self.ike,
            "{},{}",
            hex::encode(initiator_cookie),
            hex::encode(enc_key)
        )?;
        self.ike.flush()?;
        Ok(())
    }

    /// Every TEK of a group (both directions: any source, any destination).
    pub fn teks(&mut self, keys: &GroupKeys) -> Result<()> {
        for t in &keys.teks {
            writeln!(
                self.esp,
                "\"{}\",\"*\",\"*\",\"0x{:08x}\",\"{}\",\"0x{}\",\"{}\",\"{}\"",
                if t.dst.is_ipv6() { "IPv6" } else { "IPv4" },
                t.spi,
                esp_algorithm(t.transform),
                hex::encode(t.key.as_slice()),
                esp_authentication(t.auth),
                if t.integrity_key.is_empty() {
                    String::new()
                } else {
                    format!("0x{}", hex::encode(t.integrity_key.as_slice()))
                }
            )?;
        }
        self.esp.flush()?;
        Ok(())
    }
}
