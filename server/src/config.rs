//! The key server's configuration file (TOML). Every field is checked when
//! the file loads; an unknown field, a bad address or an out-of-range
//! value is an error that names the field, and nothing starts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use gkm_proto::group::Ipv4Prefix;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address for GDOI.
    pub listen: Option<SocketAddr>,
    /// The KS's phase 1 identity and rekey source address.
    pub identity: Option<Ipv4Addr>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Opt-in key log file (phase 1 keys and TEKs, Wireshark formats).
    pub key_log: Option<PathBuf>,
    /// Pre-shared keys by GM source range.
    #[serde(default)]
    pub psk: Vec<PskEntry>,
    /// Certificate authentication.
    pub pki: Option<Pki>,
    /// Operator tags: GM address ranges that are ASR 9000 routers.
    #[serde(default)]
    pub asr9000: Vec<String>,
    /// Groups.
    #[serde(default)]
    pub group: Vec<GroupConfig>,
}

/// One PSK.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PskEntry {
    /// GM source range, e.g. "10.0.0.0/8" or "0.0.0.0/0".
    pub prefix: String,
    /// The key itself, or
    pub key: Option<String>,
    /// a file holding it.
    pub key_file: Option<PathBuf>,
}

/// Certificate files (PEM).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    /// CA certificates GMs' certificates must chain to.
    pub ca: PathBuf,
    /// The KS's certificate.
    pub cert: PathBuf,
    /// Its PKCS#8 private key.
    pub key: PathBuf,
}

/// One group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Name.
    pub name: String,
    /// Identity number.
    pub identity: u32,
    /// TEK lifetime in seconds (300-86400).
    #[serde(default = "default_tek_lifetime")]
    pub tek_lifetime: u32,
    /// KEK lifetime in seconds (300-604800).
    #[serde(default = "default_kek_lifetime")]
    pub kek_lifetime: u32,
    /// Multicast rekey address; absent means unicast rekeys.
    pub rekey_address: Option<Ipv4Addr>,
    /// Protected traffic, one TEK per entry.
    pub tek: Vec<TekConfig>,
    /// Who may register.
    #[serde(default)]
    pub authorization: AuthorizationConfig,
}

fn default_tek_lifetime() -> u32 {
    3600
}

fn default_kek_lifetime() -> u32 {
    86_400
}

/// One TEK's selectors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TekConfig {
    /// Source prefix.
    pub src: String,
    /// Destination prefix.
    pub dst: String,
}

/// Group authorization lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// Address ranges.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Phase 1 identities.
    #[serde(default)]
    pub identities: Vec<String>,
}

/// Parses a prefix, naming the field on error.
pub fn prefix(field: &str, s: &str) -> Result<Ipv4Prefix> {
    s.parse::<Ipv4Prefix>().map_err(|e| anyhow!("{field}: {e}"))
}

impl ServerConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Self =
            toml::from_str(&text).map_err(|e| anyhow!("config {}: {e}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        for (i, p) in self.psk.iter().enumerate() {
            prefix(&format!("psk[{i}].prefix"), &p.prefix)?;
            match (&p.key, &p.key_file) {
                (Some(k), None) if !k.is_empty() => {}
                (None, Some(_)) => {}
                _ => bail!("psk[{i}]: give exactly one of key or key_file (and not an empty key)"),
            }
        }
        for (i, t) in self.asr9000.iter().enumerate() {
            prefix(&format!("asr9000[{i}]"), t)?;
        }
        let mut ids = std::collections::HashSet::new();
        for (i, g) in self.group.iter().enumerate() {
            if g.name.trim().is_empty() {
                bail!("group[{i}].name: must not be empty");
            }
            if !ids.insert(g.identity) {
                bail!(
                    "group[{i}].identity: {} is used by another group",
                    g.identity
                );
            }
            if !(300..=86_400).contains(&g.tek_lifetime) {
                bail!(
                    "group[{i}].tek_lifetime: {} is out of range: 300-86400 seconds",
                    g.tek_lifetime
                );
            }
            if !(300..=604_800).contains(&g.kek_lifetime) {
                bail!(
                    "group[{i}].kek_lifetime: {} is out of range: 300-604800 seconds",
                    g.kek_lifetime
                );
            }
            if let Some(a) = g.rekey_address {
                if !a.is_multicast() {
                    bail!("group[{i}].rekey_address: {a} is not a multicast address (omit it for unicast rekeys)");
                }
            }
            if g.tek.is_empty() {
                bail!("group[{i}].tek: at least one TEK (src, dst) is needed");
            }
            for (j, t) in g.tek.iter().enumerate() {
                prefix(&format!("group[{i}].tek[{j}].src"), &t.src)?;
                prefix(&format!("group[{i}].tek[{j}].dst"), &t.dst)?;
            }
            for (j, a) in g.authorization.addresses.iter().enumerate() {
                prefix(&format!("group[{i}].authorization.addresses[{j}]"), a)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ServerConfig> {
        let c: ServerConfig = toml::from_str(s).map_err(|e| anyhow!("{e}"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn bad_files_name_the_field() {
        let ok = "[[group]]\nname='GET'\nidentity=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n";
        assert!(parse(ok).is_ok());
        let cases = [
            ("listen = 'x'", "listen"),
            ("bogus = 1", "bogus"),
            ("[[psk]]\nprefix='10.0.0.0/33'\nkey='k'", "psk[0].prefix"),
            ("[[psk]]\nprefix='10.0.0.0/8'", "psk[0]"),
            ("[[group]]\nname='G'\nidentity=1\ntek_lifetime=10\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "tek_lifetime"),
            ("[[group]]\nname='G'\nidentity=1\nrekey_address='10.0.0.1'\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "rekey_address"),
            ("[[group]]\nname='G'\nidentity=1\ntek=[]", "group[0].tek"),
            ("[[group]]\nname='G'\nidentity=1\n[[group.tek]]\nsrc='10.0.0.0'\ndst='ten'", "group[0].tek[0].dst"),
        ];
        for (text, field) in cases {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }
}
