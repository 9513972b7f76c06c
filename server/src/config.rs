//! The key server's configuration file (TOML). Every field is checked when
//! the file loads; an unknown field, a bad address or an out-of-range
//! value is an error that names the field, and nothing starts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use gkm_model::{Ipv4Prefix, RekeyTransport};
use gkm_store::model::{KekPolicy, TekPolicy};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address for GDOI.
    pub listen: Option<SocketAddr>,
    /// The KS's address: its phase 1 identity and rekey source. Accepted
    /// as `identity` (its name in GKM 0.1).
    #[serde(alias = "identity")]
    pub ks_address: Option<Ipv4Addr>,
    /// The KS's IPv6 address: its phase 1 identity to GMs that come over
    /// IPv6 (default: the `listen` address when that is one IPv6 address;
    /// otherwise they get `ks_address`).
    pub ks_address_v6: Option<Ipv6Addr>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Store URL (`sqlite://PATH` or `postgres://...`).
    pub database: Option<String>,
    /// REST API address.
    pub http: Option<SocketAddr>,
    /// Opt-in key log file (phase 1 keys and TEKs, Wireshark formats).
    pub key_log: Option<PathBuf>,
    /// Pre-shared keys by GM source range.
    #[serde(default)]
    pub psk: Vec<PskEntry>,
    /// Certificate authentication.
    pub pki: Option<Pki>,
    /// Enrollment: the internal CA and the certificates it signs.
    #[serde(default)]
    pub enrollment: Enrollment,
    /// Operator tags: GM address ranges that are ASR 9000 routers.
    #[serde(default)]
    pub asr9000: Vec<String>,
    /// Rekey-signing key type: `rsa` (2048, default) or `ecdsa-p256`.
    #[serde(default)]
    pub rekey_signature: SignatureKind,
    /// A rekey-signing key to use (PKCS#8: PEM for `rsa`, DER for
    /// `ecdsa-p256`), imported into the store at start in place of the
    /// one there: the same key on every cooperative key server of a group
    /// (docs/COOP.md, "The rekey-signing key").
    pub rekey_signing_key: Option<PathBuf>,
    /// Groups.
    #[serde(default)]
    pub group: Vec<GroupConfig>,
    /// A syslog collector (`host:port`, RFC 5424 over UDP) for the
    /// `%GDOI-...` messages (docs/OPERATIONS.md).
    pub syslog: Option<SocketAddr>,
    /// A file holding the pre-shared key of every COOP peer listed with
    /// `authentication = { method = "psk" }` and no key of its own (one
    /// key for a deployment's key servers, kept out of this file).
    pub coop_psk_file: Option<PathBuf>,
}

/// What the command line says of the key server's own addresses; it
/// overrides the file (`--ks-address`, a pod's address from the
/// orchestrator).
#[derive(Debug, Default, Clone, Copy)]
pub struct OwnOverride {
    /// `--ks-address`.
    pub v4: Option<Ipv4Addr>,
    /// `--ks-address-v6`.
    pub v6: Option<Ipv6Addr>,
}

/// The rekey-signing key type.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureKind {
    /// RSA 2048, PKCS#1 v1.5 over the raw SHA-256 hash.
    #[default]
    Rsa,
    /// ECDSA P-256 with SHA-256.
    EcdsaP256,
}

/// A group's rekey settings (`[group.rekey]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RekeyConfig {
    /// `cisco`, `interoperable` or `any`; unicast rekeys only.
    pub acknowledgement: Option<String>,
    /// Seconds between unicast retransmissions (1-60).
    #[serde(default = "default_retransmit_interval")]
    pub retransmit_interval: u32,
    /// Unicast retransmissions after the first send (0-10).
    #[serde(default = "default_retransmit_number")]
    pub retransmit_number: u32,
    /// Rekey the TEKs this many seconds before they expire.
    #[serde(default = "default_rekey_before")]
    pub tek_rekey_before: u32,
    /// Rekey the KEK this many seconds before it expires.
    #[serde(default = "default_rekey_before")]
    pub kek_rekey_before: u32,
    /// UDP port of multicast rekeys.
    #[serde(default = "default_multicast_port")]
    pub multicast_port: u16,
    /// TTL of multicast rekeys (1-255).
    #[serde(default = "default_multicast_ttl")]
    pub multicast_ttl: u8,
}

impl Default for RekeyConfig {
    fn default() -> Self {
        Self {
            acknowledgement: None,
            retransmit_interval: default_retransmit_interval(),
            retransmit_number: default_retransmit_number(),
            tek_rekey_before: default_rekey_before(),
            kek_rekey_before: default_rekey_before(),
            multicast_port: default_multicast_port(),
            multicast_ttl: default_multicast_ttl(),
        }
    }
}

// The defaults are the model's (gkm-model, gkm-store), defined once.
fn default_retransmit_interval() -> u32 {
    RekeyTransport::RETRANSMIT_INTERVAL_SECS
}
fn default_retransmit_number() -> u32 {
    RekeyTransport::RETRANSMIT_NUMBER
}
fn default_rekey_before() -> u32 {
    gkm_model::policy::REKEY_BEFORE_SECS
}
fn default_multicast_port() -> u16 {
    RekeyTransport::MULTICAST_PORT
}
fn default_multicast_ttl() -> u8 {
    RekeyTransport::MULTICAST_TTL
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

/// The `[enrollment]` section (docs/OPERATIONS.md, "Enrollment").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The CA's certificate (PEM) and P-256 key (PKCS#8 PEM), given
    /// together: cooperative key servers share one CA this way. Without
    /// them the key server makes its own at the first start and seals it
    /// in its store.
    pub ca_cert: Option<PathBuf>,
    /// See `ca_cert`.
    pub ca_key: Option<PathBuf>,
    /// Validity of agents' certificates, days (1-825, default 90).
    pub cert_validity_days: Option<u32>,
}

impl Enrollment {
    /// The certificates' validity, checked.
    pub fn cert_validity(&self) -> anyhow::Result<std::time::Duration> {
        let days = self.cert_validity_days.unwrap_or(90);
        if !(1..=825).contains(&days) {
            anyhow::bail!("enrollment.cert_validity_days: {days} is out of range: 1-825");
        }
        Ok(std::time::Duration::from_secs(u64::from(days) * 86_400))
    }
}

/// One group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Name.
    pub name: String,
    /// Group ID: the GDOI group identity number, 1-4294967295. Accepted as
    /// `identity` (its name in GKM 0.1).
    #[serde(alias = "identity")]
    pub group_id: u32,
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
    /// Phase 1 authentication of its GMs: `psk` (default: the keyring's
    /// `[[psk]]` entries) or `pki` (certificates from the `[pki]` CAs or
    /// the internal CA: enrolled agents, each in its own groups only).
    pub authentication: Option<String>,
    /// `legacy_phase1`: accept the legacy phase 1 suites (HMAC-SHA-1,
    /// MODP 1024/1536) for this group's GMs (docs/INTEROP.md). Off by default.
    #[serde(default)]
    pub legacy_phase1: bool,
    /// Rekey settings.
    #[serde(default)]
    pub rekey: RekeyConfig,
    /// Cooperative key servers (`[group.coop]`, `[[group.coop.peers]]`):
    /// the model's own type, validated with the rest of the group.
    pub coop: Option<gkm_store::model::CoopPolicy>,
}

fn default_tek_lifetime() -> u32 {
    TekPolicy::LIFETIME_SECS
}

fn default_kek_lifetime() -> u32 {
    KekPolicy::LIFETIME_SECS
}

/// One TEK's selectors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TekConfig {
    /// Source prefix.
    pub src: String,
    /// Destination prefix.
    pub dst: String,
    /// ESP transform (`aes-gcm-128` when absent; see docs/OPERATIONS.md).
    pub transform: Option<String>,
}

/// Group authorization lists.
#[derive(Debug, Clone, Default, Deserialize)]
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

/// A source range, IPv4 or IPv6 (`[[psk]] prefix`); the error names `field`.
pub fn ip_prefix(field: &str, s: &str) -> Result<gkm_model::IpPrefix> {
    s.parse::<gkm_model::IpPrefix>()
        .map_err(|e| anyhow!("{field}: {e}"))
}

impl ServerConfig {
    /// Reads and validates a file, the command line's own addresses in
    /// place of the file's.
    pub fn load(path: &Path, own: OwnOverride) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_text(&text, own).with_context(|| format!("config {}", path.display()))
    }

    fn from_text(text: &str, own: OwnOverride) -> Result<Self> {
        let mut cfg: Self = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        cfg.ks_address = own.v4.or(cfg.ks_address);
        cfg.ks_address_v6 = own.v6.or(cfg.ks_address_v6);
        cfg.skip_own_peers();
        cfg.fill_coop_psks()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A COOP peer at this key server's own address is skipped: one peer
    /// list (every key server of the group) then serves each of them, as
    /// a deployment template writes it.
    fn skip_own_peers(&mut self) {
        let own = [
            self.ks_address.map(IpAddr::V4),
            self.ks_address_v6.map(IpAddr::V6),
        ];
        for g in &mut self.group {
            let Some(c) = g.coop.as_mut() else { continue };
            c.peers.retain(|p| {
                let ip = p.ip("").ok();
                let mine = ip.is_some() && own.contains(&ip);
                if mine {
                    tracing::info!(group = %g.name, address = %p.address, "COOP peer list names this key server: skipped");
                }
                !mine
            });
        }
    }

    /// `coop_psk_file`'s key for the peers listed on a PSK without one.
    fn fill_coop_psks(&mut self) -> Result<()> {
        let Some(f) = &self.coop_psk_file else {
            return Ok(());
        };
        let key = std::fs::read_to_string(f)
            .map_err(|e| anyhow!("coop_psk_file: cannot read {}: {e}", f.display()))?;
        let key = key.trim_end();
        gkm_store::model::check_psk("coop_psk_file", key).map_err(|e| anyhow!("{e}"))?;
        for g in &mut self.group {
            for p in g.coop.iter_mut().flat_map(|c| c.peers.iter_mut()) {
                if let gkm_store::model::Authentication::Psk { psk: psk @ None } =
                    &mut p.authentication
                {
                    *psk = Some(key.to_owned());
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if let Some(a) = self.ks_address_v6 {
            if a.to_ipv4_mapped().is_some() || a.is_unspecified() || a.is_multicast() {
                bail!("ks_address_v6: {a} is not a unicast IPv6 address of this host (an IPv4-mapped one goes in ks_address)");
            }
        }
        for (i, p) in self.psk.iter().enumerate() {
            ip_prefix(&format!("psk[{i}].prefix"), &p.prefix)?;
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
            gkm_store::model::check_name(&format!("group[{i}].name"), &g.name)
                .map_err(|e| anyhow!("{e}"))?;
            if !ids.insert(g.group_id) {
                bail!(
                    "group[{i}].group_id: {} is used by another group",
                    g.group_id
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
            match g.authentication.as_deref() {
                // Certificates from the [pki] CAs and the internal CA
                // (enrolled agents), which every key server has.
                None | Some("psk" | "pki") => {}
                Some(other) => bail!("group[{i}].authentication: {other:?} is not psk or pki"),
            }
            for (j, t) in g.tek.iter().enumerate() {
                if let Some(name) = &t.transform {
                    gkm_model::TekTransform::parse_or_explain(name)
                        .map_err(|m| anyhow!("group[{i}].tek[{j}].transform: {m}"))?;
                }
            }
            if let Some(a) = g.rekey_address {
                if !a.is_multicast() {
                    bail!("group[{i}].rekey_address: {a} is not a multicast address (omit it for unicast rekeys)");
                }
            }
            let r = &g.rekey;
            if let Some(a) = &r.acknowledgement {
                a.parse::<gkm_model::AckOption>()
                    .map_err(|e| anyhow!("group[{i}].rekey.acknowledgement: {e}"))?;
                if g.rekey_address.is_some() {
                    bail!("group[{i}].rekey.acknowledgement: rekey acknowledgement requires unicast rekey (remove rekey_address, or remove acknowledgement: multicast rekeys are not acknowledged)");
                }
            }
            if !(1..=60).contains(&r.retransmit_interval) {
                bail!(
                    "group[{i}].rekey.retransmit_interval: {} is out of range: 1-60 seconds",
                    r.retransmit_interval
                );
            }
            if r.retransmit_number > 10 {
                bail!(
                    "group[{i}].rekey.retransmit_number: {} is out of range: 0-10",
                    r.retransmit_number
                );
            }
            if r.tek_rekey_before < 10 || r.tek_rekey_before >= g.tek_lifetime / 2 {
                bail!("group[{i}].rekey.tek_rekey_before: {} must be at least 10 and under half the TEK lifetime ({} s)", r.tek_rekey_before, g.tek_lifetime);
            }
            if r.kek_rekey_before < 10 || r.kek_rekey_before >= g.kek_lifetime / 2 {
                bail!("group[{i}].rekey.kek_rekey_before: {} must be at least 10 and under half the KEK lifetime ({} s)", r.kek_rekey_before, g.kek_lifetime);
            }
            if r.multicast_ttl == 0 {
                bail!("group[{i}].rekey.multicast_ttl: 0 is out of range: 1-255");
            }
            if r.multicast_port == 0 {
                bail!("group[{i}].rekey.multicast_port: 0 is not a port");
            }
            if g.tek.is_empty() {
                bail!("group[{i}].tek: at least one TEK (src, dst) is needed");
            }
            for (j, t) in g.tek.iter().enumerate() {
                let src = ip_prefix(&format!("group[{i}].tek[{j}].src"), &t.src)?;
                let dst = ip_prefix(&format!("group[{i}].tek[{j}].dst"), &t.dst)?;
                if src.is_ipv6() != dst.is_ipv6() {
                    bail!(
                        "group[{i}].tek[{j}].dst: {dst} is not of the source's IP family ({src}): a TEK protects one family"
                    );
                }
            }
            for (j, a) in g.authorization.addresses.iter().enumerate() {
                ip_prefix(&format!("group[{i}].authorization.addresses[{j}]"), a)?;
            }
            if let Some(c) = &g.coop {
                c.validate("").map_err(|e| {
                    anyhow!(
                        "{}: {}",
                        file_path(&format!("group[{i}].coop"), &e.field),
                        e.message
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// A model field path (`/peers/0/address`) under a file path
/// (`group[0].coop`), as the file names it (`group[0].coop.peers[0].address`).
fn file_path(under: &str, pointer: &str) -> String {
    let mut out = under.to_owned();
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            out.push('.');
            out.push_str(seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn enrollment_cert_validity_is_checked_against_its_range() {
        for (days, ok) in [
            (None, true),
            (Some(1), true),
            (Some(825), true),
            (Some(0), false),
            (Some(826), false),
        ] {
            let e = super::Enrollment {
                cert_validity_days: days,
                ..Default::default()
            };
            let r = e.cert_validity();
            assert_eq!(r.is_ok(), ok, "{days:?}");
            if let Err(err) = r {
                assert!(
                    err.to_string()
                        .starts_with("enrollment.cert_validity_days:"),
                    "{err}"
                );
            }
        }
        let bad: Result<super::ServerConfig, _> =
            toml::from_str("[enrollment]\nca_certificate = 'x'\n");
        assert!(bad.unwrap_err().to_string().contains("ca_certificate"));
    }

    use super::*;

    fn parse(s: &str) -> Result<ServerConfig> {
        ServerConfig::from_text(s, OwnOverride::default())
    }

    #[test]
    fn names_of_gkm_0_1_still_load() {
        let old = "identity='10.0.0.1'\n[[group]]\nname='GET'\nidentity=7\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n";
        let c = parse(old).unwrap();
        assert_eq!(c.ks_address, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.group[0].group_id, 7);
        // Both names at once is a duplicate field, not a silent choice.
        let both = "[[group]]\nname='GET'\nidentity=7\ngroup_id=8\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n";
        let e = parse(both).unwrap_err().to_string();
        assert!(e.contains("group_id"), "{e}");
    }

    #[test]
    fn psk_and_authorization_ranges_may_be_ipv6() {
        let text = "[[psk]]\nprefix='fd00:1::/64'\nkey='k'\n[[group]]\nname='V6'\ngroup_id=7\nauthorization.addresses=['fd00:1::/64','10.0.0.0/8']\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n";
        let c = parse(text).unwrap();
        assert_eq!(c.psk[0].prefix, "fd00:1::/64");
        let p = crate::groups::policy_from_config(&c.group[0]).unwrap();
        assert_eq!(p.authorization.prefixes().unwrap().len(), 2);
        let e = format!(
            "{:#}",
            parse("[[psk]]\nprefix='fd00::/129'\nkey='k'").unwrap_err()
        );
        assert!(
            e.contains("psk[0].prefix") && e.contains("not an IP prefix"),
            "{e}"
        );
    }

    #[test]
    fn a_tek_may_name_its_transform() {
        let text = "[[group]]\nname='CBC'\ngroup_id=7\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\ntransform='aes-cbc-256-hmac-sha1'\n[[group.tek]]\nsrc='10.1.0.0/16'\ndst='10.1.0.0/16'\n";
        let c = parse(text).unwrap();
        let p = crate::groups::policy_from_config(&c.group[0]).unwrap();
        assert_eq!(p.teks[0].transform, "aes-cbc-256-hmac-sha1");
        assert_eq!(p.teks[1].transform, "aes-gcm-128", "the default");
    }

    #[test]
    fn legacy_phase1_is_off_unless_a_group_turns_it_on() {
        let text = "[[group]]\nname='OLD'\ngroup_id=7\nlegacy_phase1=true\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n[[group]]\nname='NEW'\ngroup_id=8\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n";
        let c = parse(text).unwrap();
        let old = crate::groups::policy_from_config(&c.group[0]).unwrap();
        let new = crate::groups::policy_from_config(&c.group[1]).unwrap();
        assert!(old.legacy_phase1 && !new.legacy_phase1);
        assert_eq!(old.weak_algorithms().len(), 4);
        assert!(new.weak_algorithms().is_empty());
    }

    const COOP_GROUP: &str = "ks_address = '10.0.0.1'\n[[group]]\nname='G'\ngroup_id=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n[group.coop]\npriority = 120\n[[group.coop.peers]]\naddress = '10.0.0.2'\nauthentication = { method = 'psk', psk = 'ks-pair-secret' }\n[[group.coop.peers]]\naddress = '10.0.0.3'\nidentity = 'CN=ks3'\nauthentication = { method = 'pki' }\n";
    const COOP_GROUP_PRIORITY_0: &str = "[[group]]\nname='G'\ngroup_id=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n[group.coop]\npriority = 0\n[[group.coop.peers]]\naddress = '10.0.0.2'\n";

    #[test]
    fn one_peer_list_serves_every_key_server_of_the_group() {
        // The list names all three; each key server skips its own address,
        // the file's or the command line's.
        let all = COOP_GROUP.replace(
            "[[group.coop.peers]]\naddress = '10.0.0.2'",
            "[[group.coop.peers]]\naddress = '10.0.0.1'\n[[group.coop.peers]]\naddress = '10.0.0.2'",
        );
        let peers = |c: &ServerConfig| -> Vec<String> {
            c.group[0]
                .coop
                .as_ref()
                .unwrap()
                .peers
                .iter()
                .map(|p| p.address.clone())
                .collect()
        };
        assert_eq!(peers(&parse(&all).unwrap()), ["10.0.0.2", "10.0.0.3"]);
        let pod2 = OwnOverride {
            v4: Some("10.0.0.2".parse().unwrap()),
            v6: None,
        };
        let c = ServerConfig::from_text(&all, pod2).unwrap();
        assert_eq!(c.ks_address, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(peers(&c), ["10.0.0.1", "10.0.0.3"]);
    }

    #[test]
    fn coop_psk_file_keys_the_peers_listed_without_a_key() {
        let dir = std::env::temp_dir().join(format!("gkm-coop-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("coop-psk");
        std::fs::write(&f, "cluster-pair-key\n").unwrap();
        let text = COOP_GROUP
            .replace("ks_address = '10.0.0.1'\n", &format!("ks_address = '10.0.0.1'\ncoop_psk_file = '{}'\n", f.display()))
            .replace("[[group.coop.peers]]\naddress = '10.0.0.3'", "[[group.coop.peers]]\naddress = '10.0.0.4'\nauthentication = { method = 'psk' }\n[[group.coop.peers]]\naddress = '10.0.0.3'");
        let c = parse(&text).unwrap();
        assert_eq!(
            c.group[0]
                .coop
                .as_ref()
                .unwrap()
                .peer_psks()
                .collect::<Vec<_>>(),
            [
                ("10.0.0.2", "ks-pair-secret"),
                ("10.0.0.4", "cluster-pair-key")
            ],
            "a peer's own key stays; certificates stay certificates"
        );
        std::fs::write(&f, "").unwrap();
        let e = format!("{:#}", parse(&text).unwrap_err());
        assert!(e.contains("coop_psk_file"), "{e}");
        let e = format!(
            "{:#}",
            parse(&text.replace("coop-psk", "absent")).unwrap_err()
        );
        assert!(e.contains("coop_psk_file: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_group_lists_its_peer_key_servers() {
        let c = parse(COOP_GROUP).unwrap();
        let p = crate::groups::policy_from_config(&c.group[0]).unwrap();
        let coop = p.coop.expect("coop");
        assert_eq!(
            (
                coop.priority,
                coop.refresh_secs,
                coop.check_secs,
                coop.dead_periods
            ),
            (120, 20, 30, 3),
            "the defaults fill what the file leaves out"
        );
        assert_eq!(coop.peers.len(), 2);
        assert_eq!(
            coop.peer_psks().collect::<Vec<_>>(),
            [("10.0.0.2", "ks-pair-secret")]
        );
        assert_eq!(coop.peers[1].identity.as_deref(), Some("CN=ks3"));
    }

    #[test]
    fn bad_files_name_the_field() {
        let ok = "[[group]]\nname='GET'\ngroup_id=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n";
        assert!(parse(ok).is_ok());
        let cases = [
            ("listen = 'x'", "listen"),
            ("bogus = 1", "bogus"),
            ("[[psk]]\nprefix='10.0.0.0/33'\nkey='k'", "psk[0].prefix"),
            ("[[psk]]\nprefix='10.0.0.0/8'", "psk[0]"),
            ("[[group]]\nname='G'\ngroup_id=1\ntek_lifetime=10\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "tek_lifetime"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey_address='10.0.0.1'\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "rekey_address"),
            ("[[group]]\nname='G'\ngroup_id=1\ntek=[]", "group[0].tek"),
            ("[[group]]\nname='G'\ngroup_id=1\n[[group.tek]]\nsrc='10.0.0.0'\ndst='ten'", "group[0].tek[0].dst"),
            ("[[group]]\nname='G'\ngroup_id=1\n[[group.tek]]\nsrc='fd00::/64'\ndst='10.0.0.0/8'", "group[0].tek[0].dst: 10.0.0.0/8 is not of the source's IP family"),
            ("ks_address_v6 = '::ffff:10.0.0.1'", "ks_address_v6: ::ffff:10.0.0.1 is not a unicast IPv6 address"),
            ("[[psk]]\nprefix='::ffff:10.0.0.0/104'\nkey='k'", "psk[0].prefix: \"::ffff:10.0.0.0/104\" is an IPv4-mapped IPv6 prefix"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey_address='239.1.1.1'\nrekey.acknowledgement='any'\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "requires unicast rekey"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey.acknowledgement='Cisco'\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "group[0].rekey.acknowledgement"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey.retransmit_interval=0\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "retransmit_interval"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey.retransmit_number=11\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "retransmit_number"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey.tek_rekey_before=1800\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "tek_rekey_before"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey.multicast_ttl=0\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "multicast_ttl"),
            ("[[group]]\nname='G'\ngroup_id=1\nrekey.bogus=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "bogus"),
            ("rekey_signature='dsa'", "rekey_signature"),
            ("[[group]]\nname=\"G\\nINFO forged\"\ngroup_id=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "group[0].name"),
            ("[[group]]\nname='G\u{202e}'\ngroup_id=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "group[0].name"),
            ("[[group]]\nname='G'\ngroup_id=1\nauthentication='cert'\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "group[0].authentication"),
            ("[[group]]\nname='G'\ngroup_id=1\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\ntransform='3des-hmac-sha1'", "3DES is not offered"),
            ("[[group]]\nname='G'\ngroup_id=1\nlegacy_phase1='yes'\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'", "legacy_phase1"),
            (COOP_GROUP_PRIORITY_0, "group[0].coop.priority: 0 is out of range: 1-255"),
            (&COOP_GROUP.replace("priority = 120", "dead_periods = 11"), "group[0].coop.dead_periods: 11 is out of range: 2-10"),
            (&COOP_GROUP.replace("priority = 120", "refresh_secs = 30\ncheck_secs = 20"), "group[0].coop.check_secs: 20 is under refresh_secs"),
            (&COOP_GROUP.replace("10.0.0.2", "ks2"), "group[0].coop.peers[0].address: \"ks2\" is not an IP address"),
            (&COOP_GROUP.replace("priority = 120", "prio = 120"), "prio"),
        ];
        for (text, field) in cases {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }
}
