//! What the key server keeps across restarts until the store lands
//! (controller-core issue): each group's keys and SEQ, sealed at rest, and
//! the GM database as an append-only journal.
//!
//! - `group-<id>.state`: the engine's [`GroupState`] as JSON, sealed with
//!   AES-256-GCM under the master key (file name as associated data),
//!   written to a temporary file, fsynced, renamed over the old one, and
//!   the directory fsynced. It is written before any GROUPKEY-PUSH with a
//!   new SEQ leaves, so a crash never reuses a SEQ or loses a key GMs hold.
//! - `gms.jsonl`: one line per registration or removal (no key material).
//!   Lines are written as events happen and fsynced before every rekey;
//!   the file is compacted at start-up.
//! - The master key: `GKM_MASTER_KEY` (64 hex digits), or the file named by
//!   `GKM_MASTER_KEY_FILE`, or `master.key` in the data directory, created
//!   with mode 0600 on first run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use gkm_proto::crypto::CbcCipher;
use gkm_proto::engine::GmClass;
use gkm_proto::group::{GroupKeys, Ipv4Prefix, Kek, Tek};
use gkm_proto::ks::GmRecord;
use gkm_proto::rekey::GroupState;
use gkm_wire::consts::{EspTransformId, SigAlgorithm};
use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion};
use serde::{Deserialize, Serialize};
use tracing::info;
use zeroize::Zeroizing;

pub use gkm_store::seal::MasterKey;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKek {
    spi: String,
    key_bits: u16,
    iv: String,
    key: String,
    lifetime_secs: u32,
    rekey_src: Ipv4Addr,
    rekey_dst: Ipv4Addr,
    #[serde(default = "gdoi_port")]
    rekey_port: u16,
    sig_algorithm: u16,
    sig_key_spki: String,
    sig_key_bits: u16,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTek {
    spi: u32,
    transform: u8,
    key: String,
    src: String,
    dst: String,
    lifetime_secs: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredGroup {
    group_id: u32,
    /// The configuration the keys were made for; a change means "rekey replace".
    policy: String,
    seq: u32,
    kek: Option<StoredKek>,
    teks: Vec<StoredTek>,
    push_kek: Option<StoredKek>,
    previous_teks: Vec<(StoredTek, u64)>,
    tek_expires_at: u64,
    kek_expires_at: u64,
    rekeys_sent: u64,
}

fn gdoi_port() -> u16 {
    gkm_wire::consts::GDOI_PORT
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| anyhow!("{what}: expected {N} octets of hex"))
}

impl StoredKek {
    fn from(k: &Kek) -> Self {
        Self {
            spi: hex::encode(k.spi),
            key_bits: k.cipher.key_bits(),
            iv: hex::encode(k.iv),
            key: hex::encode(k.key.as_slice()),
            lifetime_secs: k.lifetime_secs,
            rekey_src: k.rekey_src,
            rekey_dst: k.rekey_dst,
            rekey_port: k.rekey_port,
            sig_algorithm: k.sig_algorithm.0,
            sig_key_spki: hex::encode(&k.sig_key_spki),
            sig_key_bits: k.sig_key_bits,
        }
    }

    fn to_kek(&self) -> Result<Kek> {
        let cipher = match self.key_bits {
            128 => CbcCipher::Aes128,
            256 => CbcCipher::Aes256,
            b => bail!("KEK key size {b}"),
        };
        let key = Zeroizing::new(hex::decode(&self.key).map_err(|_| anyhow!("KEK key"))?);
        if key.len() != cipher.key_len() {
            bail!("KEK key length");
        }
        Ok(Kek {
            spi: unhex(&self.spi, "KEK SPI")?,
            cipher,
            iv: unhex(&self.iv, "KEK IV")?,
            key,
            lifetime_secs: self.lifetime_secs,
            rekey_src: self.rekey_src,
            rekey_dst: self.rekey_dst,
            rekey_port: self.rekey_port,
            sig_algorithm: SigAlgorithm(self.sig_algorithm),
            sig_key_spki: hex::decode(&self.sig_key_spki).map_err(|_| anyhow!("KEK SPKI"))?,
            sig_key_bits: self.sig_key_bits,
        })
    }
}

impl StoredTek {
    fn from(t: &Tek) -> Self {
        Self {
            spi: t.spi,
            transform: t.transform.0,
            key: hex::encode(t.key.as_slice()),
            src: t.src.to_string(),
            dst: t.dst.to_string(),
            lifetime_secs: t.lifetime_secs,
        }
    }

    fn to_tek(&self) -> Result<Tek> {
        Ok(Tek {
            spi: self.spi,
            transform: EspTransformId(self.transform),
            key: Zeroizing::new(hex::decode(&self.key).map_err(|_| anyhow!("TEK key"))?),
            src: self.src.parse::<Ipv4Prefix>().map_err(|e| anyhow!(e))?,
            dst: self.dst.parse::<Ipv4Prefix>().map_err(|e| anyhow!(e))?,
            lifetime_secs: self.lifetime_secs,
        })
    }
}

/// A group's persisted state and the policy it was made for.
pub struct Resumed {
    /// The engine state.
    pub state: GroupState,
    /// The policy fingerprint at the time.
    pub policy: String,
}

/// The data directory's durable state.
pub struct StateDir {
    dir: PathBuf,
    master: MasterKey,
    journal: File,
    /// Lines in the journal now.
    journal_lines: usize,
}

/// The journal is rewritten from the GM database when it holds this many
/// lines more than twice the GMs it describes (re-registrations add lines).
const JOURNAL_SLACK: usize = 10_000;

fn group_file(group_id: u32) -> String {
    format!("group-{group_id}.state")
}

/// Writes `data` to `dir/name` atomically and durably.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()
        .with_context(|| format!("cannot fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))?;
    Ok(())
}

/// One line of the GM journal.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum JournalLine {
    Add {
        group: u32,
        identity: String,
        addr: SocketAddr,
        class: String,
        version: Option<[u8; 3]>,
        features: u32,
        sids: Vec<u32>,
        registered_at: u64,
    },
    Del {
        group: u32,
        identity: String,
    },
}

fn class_name(c: GmClass) -> String {
    c.to_string()
}

fn class_from(s: &str) -> Result<GmClass> {
    Ok(match s {
        "cisco" => GmClass::Cisco,
        "asr9000" => GmClass::Asr9000,
        "non-cisco" => GmClass::NonCisco,
        other => bail!("unknown GM class {other:?}"),
    })
}

impl JournalLine {
    fn add(r: &GmRecord) -> Self {
        Self::Add {
            group: r.group_id,
            identity: r.identity.clone(),
            addr: r.addr,
            class: class_name(r.class),
            version: r.version.map(|v| [v.major, v.minor, v.mini]),
            features: r.features.0,
            sids: r.sids.clone(),
            registered_at: r.registered_at,
        }
    }
}

impl StateDir {
    /// Opens the data directory's state (creating the master key and the
    /// journal on first run).
    pub fn open(dir: &Path) -> Result<Self> {
        let (master, created) = MasterKey::load(dir)?;
        if let Some(path) = created {
            info!(path = %path.display(), "generated the master key that seals keys at rest; back it up");
        }
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("gms.jsonl"))
            .with_context(|| format!("cannot open {}", dir.join("gms.jsonl").display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            master,
            journal,
            journal_lines: 0,
        })
    }

    /// Makes a group's state durable.
    pub fn save_group(&mut self, policy: &str, s: &GroupState) -> Result<()> {
        let stored = StoredGroup {
            group_id: s.keys.group_id,
            policy: policy.to_owned(),
            seq: s.keys.seq,
            kek: s.keys.kek.as_ref().map(StoredKek::from),
            teks: s.keys.teks.iter().map(StoredTek::from).collect(),
            push_kek: s.push_kek.as_ref().map(StoredKek::from),
            previous_teks: s
                .previous_teks
                .iter()
                .map(|(t, e)| (StoredTek::from(t), *e))
                .collect(),
            tek_expires_at: s.tek_expires_at,
            kek_expires_at: s.kek_expires_at,
            rekeys_sent: s.rekeys_sent,
        };
        let json = Zeroizing::new(serde_json::to_vec(&stored)?);
        let name = group_file(s.keys.group_id);
        let sealed = self.master.seal(&name, &json)?;
        // GMs registered so far are durable before the rekey that counts on them.
        self.journal.sync_data()?;
        write_atomic(&self.dir, &name, &sealed)
    }

    /// A group's persisted state, if any.
    pub fn load_group(&self, group_id: u32) -> Result<Option<Resumed>> {
        let name = group_file(group_id);
        let path = self.dir.join(&name);
        let sealed = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let plain = self.master.open(&name, &sealed)?;
        let g: StoredGroup = serde_json::from_slice(&plain)
            .with_context(|| format!("{}: not a group state", path.display()))?;
        if g.group_id != group_id {
            bail!("{}: holds group {}", path.display(), g.group_id);
        }
        let keys = GroupKeys {
            group_id,
            kek: g.kek.as_ref().map(StoredKek::to_kek).transpose()?,
            teks: g
                .teks
                .iter()
                .map(StoredTek::to_tek)
                .collect::<Result<_>>()?,
            seq: g.seq,
        };
        Ok(Some(Resumed {
            policy: g.policy,
            state: GroupState {
                keys,
                push_kek: g.push_kek.as_ref().map(StoredKek::to_kek).transpose()?,
                previous_teks: g
                    .previous_teks
                    .iter()
                    .map(|(t, e)| Ok((t.to_tek()?, *e)))
                    .collect::<Result<_>>()?,
                tek_expires_at: g.tek_expires_at,
                kek_expires_at: g.kek_expires_at,
                rekeys_sent: g.rekeys_sent,
            },
        }))
    }

    /// Appends a registration to the GM journal.
    pub fn gm_registered(&mut self, r: &GmRecord) -> Result<()> {
        self.append(&JournalLine::add(r))
    }

    /// Appends a removal to the GM journal.
    pub fn gm_removed(&mut self, group: u32, identity: &str) -> Result<()> {
        self.append(&JournalLine::Del {
            group,
            identity: identity.to_owned(),
        })
    }

    fn append(&mut self, line: &JournalLine) -> Result<()> {
        let mut b = serde_json::to_vec(line)?;
        b.push(b'\n');
        self.journal.write_all(&b)?;
        self.journal_lines += 1;
        Ok(())
    }

    /// Rewrites the journal from the current GM database when it has grown
    /// well past it; returns whether it did.
    pub fn compact_if_large<'a>(
        &mut self,
        gms: impl ExactSizeIterator<Item = &'a GmRecord>,
    ) -> Result<bool> {
        if self.journal_lines <= 2 * gms.len() + JOURNAL_SLACK {
            return Ok(false);
        }
        self.rewrite(gms)?;
        Ok(true)
    }

    fn rewrite<'a>(&mut self, gms: impl Iterator<Item = &'a GmRecord>) -> Result<()> {
        let mut compact = Vec::new();
        let mut lines = 0;
        for r in gms {
            compact.extend(serde_json::to_vec(&JournalLine::add(r))?);
            compact.push(b'\n');
            lines += 1;
        }
        write_atomic(&self.dir, "gms.jsonl", &compact)?;
        self.journal = OpenOptions::new()
            .append(true)
            .open(self.dir.join("gms.jsonl"))?;
        self.journal_lines = lines;
        Ok(())
    }

    /// The GM database: the journal replayed, then compacted in place. A
    /// torn last line (crash mid-write) is dropped; any other bad line is
    /// an error naming its number.
    pub fn load_gms(&mut self) -> Result<Vec<GmRecord>> {
        let path = self.dir.join("gms.jsonl");
        let mut gms: BTreeMap<(u32, String), GmRecord> = BTreeMap::new();
        let lines: Vec<String> = BufReader::new(File::open(&path)?)
            .lines()
            .collect::<std::io::Result<_>>()?;
        let n = lines.len();
        for (i, text) in lines.iter().enumerate() {
            let line: JournalLine = match serde_json::from_str(text) {
                Ok(l) => l,
                Err(_) if i + 1 == n => break,
                Err(e) => bail!("{} line {}: {e}", path.display(), i + 1),
            };
            match line {
                JournalLine::Add {
                    group,
                    identity,
                    addr,
                    class,
                    version,
                    features,
                    sids,
                    registered_at,
                } => {
                    let r = GmRecord {
                        identity: identity.clone(),
                        addr,
                        group_id: group,
                        class: class_from(&class)?,
                        version: version.map(|[major, minor, mini]| GdoiVersion {
                            major,
                            minor,
                            mini,
                        }),
                        features: FeatureBits(features),
                        sids,
                        registered_at,
                    };
                    gms.insert((group, identity), r);
                }
                JournalLine::Del { group, identity } => {
                    gms.remove(&(group, identity));
                }
            }
        }
        self.rewrite(gms.values())?;
        Ok(gms.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gkm-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sealed_files_refuse_another_label_or_key_or_a_flipped_bit() {
        let d = tmpdir("seal");
        let (k, created) = MasterKey::load(&d).unwrap();
        assert_eq!(created, Some(d.join("master.key")));
        let sealed = k.seal("a", b"secret").unwrap();
        assert_eq!(k.open("a", &sealed).unwrap().as_slice(), b"secret");
        assert!(k.open("b", &sealed).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open("a", &bad).is_err());
        assert!(k.open("a", &sealed[..10]).is_err());
        // Same directory: same key.
        assert_eq!(
            MasterKey::load(&d)
                .unwrap()
                .0
                .open("a", &sealed)
                .unwrap()
                .as_slice(),
            b"secret"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn journal_replays_adds_and_removals_and_drops_a_torn_tail() {
        let d = tmpdir("journal");
        let mut s = StateDir::open(&d).unwrap();
        let rec = |id: &str| GmRecord {
            identity: id.into(),
            addr: "10.0.0.9:848".parse().unwrap(),
            group_id: 7,
            class: GmClass::Asr9000,
            version: Some(GdoiVersion {
                major: 1,
                minor: 0,
                mini: 11,
            }),
            features: FeatureBits(3),
            sids: vec![4],
            registered_at: 99,
        };
        s.gm_registered(&rec("a")).unwrap();
        s.gm_registered(&rec("b")).unwrap();
        s.gm_removed(7, "a").unwrap();
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("gms.jsonl"))
            .unwrap();
        f.write_all(b"{\"op\":\"add\",\"gro").unwrap();
        let mut s = StateDir::open(&d).unwrap();
        let gms = s.load_gms().unwrap();
        assert_eq!(gms, vec![rec("b")]);
        // Compacted: one line.
        let text = std::fs::read_to_string(d.join("gms.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1);
        // Re-registrations grow the journal; past the slack it is rewritten.
        for _ in 0..(JOURNAL_SLACK + 3) {
            s.gm_registered(&rec("b")).unwrap();
        }
        let b = rec("b");
        assert!(s.compact_if_large(std::iter::once(&b)).unwrap());
        let text = std::fs::read_to_string(d.join("gms.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(!s.compact_if_large(std::iter::once(&b)).unwrap());
        // A bad line in the middle is an error, not silently skipped.
        std::fs::write(d.join("gms.jsonl"), "garbage\n{}\n").unwrap();
        let mut s = StateDir::open(&d).unwrap();
        assert!(format!("{:#}", s.load_gms().unwrap_err()).contains("line 1"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
