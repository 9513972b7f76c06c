//! From the controller's group model (gkm-store) to the key-server
//! engine's groups (gkm-proto): fresh keys of the policy's shape, the
//! rekey policy, authorization, and the fingerprint of what the keys
//! depend on (persisted with them: a change means new keys and a rekey
//! replace).

use std::net::Ipv4Addr;

use anyhow::{anyhow, Result};
use gkm_model::{AckOption, RekeyTransport, TekTransform};
use gkm_proto::crypto::{CbcCipher, RekeySigner};
use gkm_proto::group::{GroupKeys, KekParams, Tek};
use gkm_proto::ks::{Authorization, GroupAuth, KsGroup};
use gkm_proto::rekey::RekeyPolicy;
use gkm_store::model::{GroupPolicy, KekPolicy, TekPolicy};
use rand_core::OsRng;

use crate::config::GroupConfig;

/// What every group's KEK shares: the KS's address and rekey-signing key.
pub struct KeyMaker {
    /// The KS's identity and rekey source.
    pub identity: Ipv4Addr,
    sig: (gkm_wire::consts::SigAlgorithm, Vec<u8>, u16),
    spki_digest: String,
}

/// An engine group made from the model.
pub struct EngineGroup {
    /// The group, with fresh keys.
    pub group: KsGroup,
    /// What the keys depend on.
    pub fingerprint: String,
    /// Multicast rekey address and TTL, if multicast.
    pub multicast: Option<(Ipv4Addr, u8)>,
}

impl KeyMaker {
    /// For a KS at `identity` signing with `signer`.
    pub fn new(identity: Ipv4Addr, signer: &RekeySigner) -> Result<Self> {
        let spki = signer.public_spki_der().map_err(|e| anyhow!("{e}"))?;
        let spki_digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(Self {
            identity,
            sig: (signer.algorithm(), spki, signer.key_bits()),
            spki_digest,
        })
    }

    /// The engine group for a validated policy, with fresh keys.
    pub fn make(&self, name: &str, identity: u32, p: &GroupPolicy) -> Result<EngineGroup> {
        let selectors = p
            .teks
            .iter()
            .enumerate()
            .map(|(i, t)| t.selectors(&format!("/teks/{i}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("{e}"))?;
        let (dst, port, multicast) = match p.rekey {
            RekeyTransport::Unicast { .. } => {
                (Ipv4Addr::UNSPECIFIED, gkm_wire::consts::GDOI_PORT, None)
            }
            RekeyTransport::Multicast { address, port, ttl } => {
                (address, port, Some((address, ttl)))
            }
        };
        let cipher = if p.kek.algorithm == "aes-cbc-256" {
            CbcCipher::Aes256
        } else {
            CbcCipher::Aes128
        };
        let kek = KekParams {
            src: self.identity,
            dst,
            port,
            lifetime_secs: p.kek.lifetime,
            cipher,
            sig_algorithm: self.sig.0,
            sig_key_spki: self.sig.1.clone(),
            sig_key_bits: self.sig.2,
        };
        let mut keys = GroupKeys::generate(&mut OsRng, identity, &selectors, 3600, Some(&kek));
        // Each TEK takes its own transform (fresh keys of its sizes) and
        // lifetime.
        for (i, (t, policy)) in keys.teks.iter_mut().zip(&p.teks).enumerate() {
            let transform = TekTransform::parse(&policy.transform)
                .ok_or_else(|| anyhow!("/teks/{i}/transform: {:?}", policy.transform))?;
            *t = Tek {
                lifetime_secs: policy.lifetime,
                ..t.with_transform(transform, &mut OsRng)
            };
        }
        let fingerprint = format!(
            "teks={:?};kek={}/{};rekey_dst={dst};port={port};sig={}",
            p.teks
                .iter()
                .map(|t| (&t.src, &t.dst, &t.transform, t.lifetime))
                .collect::<Vec<_>>(),
            p.kek.algorithm,
            p.kek.lifetime,
            self.spki_digest
        );
        let authorization = Authorization {
            addresses: p.authorization.prefixes().map_err(|e| anyhow!("{e}"))?,
            identities: p.authorization.identities.clone(),
        };
        Ok(EngineGroup {
            group: KsGroup {
                name: name.to_owned(),
                keys,
                authorization,
                authentication: match p.authentication {
                    gkm_store::model::Authentication::Psk { .. } => GroupAuth::Psk,
                    gkm_store::model::Authentication::Pki => GroupAuth::Certificate,
                },
                legacy_phase1: p.legacy_phase1,
                rekey: RekeyPolicy {
                    transport: p.rekey,
                    ack: p.acknowledgement.unwrap_or_default(),
                    tek_rekey_before_ms: u64::from(p.tek_rekey_before) * 1000,
                    kek_rekey_before_ms: u64::from(p.kek_rekey_before) * 1000,
                },
                resume: None,
                d3p_window_ms: p.d3p_window.as_ref().map(|w| w.as_msec()),
            },
            fingerprint,
            multicast,
        })
    }
}

/// A configuration-file group as the controller's model (imported into the
/// store the first time the server sees it). The file keeps its own,
/// older shape (`tek_lifetime` per group, `rekey_address`, ...) so that
/// existing files load unchanged; this maps it field by field and the
/// model's defaults fill the rest.
pub fn policy_from_config(g: &GroupConfig) -> Result<GroupPolicy> {
    let r = &g.rekey;
    let acknowledgement = r
        .acknowledgement
        .as_deref()
        .map(str::parse::<AckOption>)
        .transpose()
        .map_err(|e| anyhow!("group {:?}: {e}", g.name))?;
    let p = GroupPolicy {
        kek: KekPolicy {
            lifetime: g.kek_lifetime,
            ..KekPolicy::default()
        },
        teks: g
            .tek
            .iter()
            .map(|t| TekPolicy {
                src: t.src.clone(),
                dst: t.dst.clone(),
                transform: t
                    .transform
                    .clone()
                    .unwrap_or_else(|| TekPolicy::DEFAULT_TRANSFORM.to_owned()),
                lifetime: g.tek_lifetime,
            })
            .collect(),
        rekey: match g.rekey_address {
            Some(address) => RekeyTransport::Multicast {
                address,
                port: r.multicast_port,
                ttl: r.multicast_ttl,
            },
            None => RekeyTransport::Unicast {
                retransmit_interval: r.retransmit_interval,
                retransmit_number: r.retransmit_number,
            },
        },
        tek_rekey_before: r.tek_rekey_before,
        kek_rekey_before: r.kek_rekey_before,
        acknowledgement,
        activation_time_delay: None,
        d3p_window: None,
        gm_error_detection: false,
        cmd_inline_tagging: false,
        authorization: gkm_store::model::Authorization {
            addresses: g.authorization.addresses.clone(),
            identities: g.authorization.identities.clone(),
        },
        authentication: match g.authentication.as_deref() {
            Some("pki") => gkm_store::model::Authentication::Pki,
            _ => gkm_store::model::Authentication::Psk { psk: None },
        },
        legacy_phase1: g.legacy_phase1,
        coop: g.coop.clone(),
    };
    p.validate()
        .map_err(|e| anyhow!("group {:?}: {e}", g.name))?;
    Ok(p)
}
