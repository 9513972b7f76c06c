//! A group's keys and policy as both ends hold them, and their mapping to
//! the GDOI SA and KD payloads (RFC 6407 sections 5.2-5.6).

use std::net::{IpAddr, Ipv4Addr};

use gkm_wire::consts::{
    AckRequested, AddressPreservation, AuthAlgorithm, EncapsulationMode, EspTransformId,
    GdoiProtocol, IpProtocol, KekAlgorithm, SaDirection, SigAlgorithm, SigHashAlgorithm, GDOI_PORT,
};
use gkm_wire::payload::{
    GdoiSa, IpsecSaAttributes, IpsecTek, KekKeyPacket, KekPolicy, KeyDownload, KeyPacket, SaKek,
    SaTek, SidKeyPacket, TekBody, TekKeyPacket, TrafficSelector,
};
use gkm_wire::Identity;
use zeroize::Zeroizing;

use crate::crypto::{rng, CbcCipher, EngineRng};

pub use gkm_model::{IpPrefix, Ipv4Prefix, TekTransform};

/// A prefix as a GDOI traffic selector's identity (RFC 2407 section
/// 4.6.2): ID_IPV4_ADDR_SUBNET or ID_IPV6_ADDR_SUBNET.
fn prefix_identity(p: &IpPrefix) -> Identity<'static> {
    match (p.addr(), p.mask()) {
        (IpAddr::V4(a), IpAddr::V4(m)) => Identity::Ipv4Subnet(a, m),
        (IpAddr::V6(a), IpAddr::V6(m)) => Identity::Ipv6Subnet(a, m),
        // A prefix's address and mask are of one family.
        (IpAddr::V4(a), IpAddr::V6(_)) => Identity::Ipv4Addr(a),
        (IpAddr::V6(a), IpAddr::V4(_)) => Identity::Ipv6Addr(a),
    }
}

/// A traffic selector's identity as a prefix; none for a non-contiguous
/// mask or another identity type (ranges, names).
fn prefix_from_identity(id: &Identity<'_>) -> Option<IpPrefix> {
    match *id {
        Identity::Ipv4Subnet(addr, mask) => IpPrefix::from_netmask(addr.into(), mask.into()),
        Identity::Ipv4Addr(addr) => IpPrefix::new(addr.into(), 32),
        Identity::Ipv6Subnet(addr, mask) => IpPrefix::from_netmask(addr.into(), mask.into()),
        Identity::Ipv6Addr(addr) => IpPrefix::new(addr.into(), 128),
        _ => None,
    }
}

/// The key encryption key and how rekeys are sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Kek {
    /// KEK SPI = cookie pair of every PUSH under it.
    pub spi: [u8; 16],
    /// AES-CBC cipher of the KEK.
    pub cipher: CbcCipher,
    /// The CBC IV delivered with the key (RFC 6407 section 5.6.2.1).
    pub iv: [u8; 16],
    /// The key.
    pub key: Zeroizing<Vec<u8>>,
    /// Lifetime in seconds.
    pub lifetime_secs: u32,
    /// Rekey source (the KS) and destination (multicast group, or 0.0.0.0 for unicast).
    pub rekey_src: Ipv4Addr,
    /// See `rekey_src`.
    pub rekey_dst: Ipv4Addr,
    /// UDP port rekeys are sent to (the SA KEK destination port).
    pub rekey_port: u16,
    /// SIG_ALGORITHM of the KS's rekey-signing key.
    pub sig_algorithm: SigAlgorithm,
    /// The KS's rekey-signing key, DER SubjectPublicKeyInfo.
    pub sig_key_spki: Vec<u8>,
    /// Its size in bits (RSA modulus, or 256 for P-256).
    pub sig_key_bits: u16,
}

/// What a new KEK is made from: everything but the random SPI, IV and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekParams {
    /// Rekey source (the KS).
    pub src: Ipv4Addr,
    /// Rekey destination: a multicast group, or 0.0.0.0 for unicast rekeys.
    pub dst: Ipv4Addr,
    /// Rekey destination port (multicast rekeys are sent there).
    pub port: u16,
    /// Lifetime in seconds.
    pub lifetime_secs: u32,
    /// Cipher.
    pub cipher: CbcCipher,
    /// SIG_ALGORITHM of the rekey-signing key.
    pub sig_algorithm: SigAlgorithm,
    /// The rekey-signing public key, DER SubjectPublicKeyInfo.
    pub sig_key_spki: Vec<u8>,
    /// Its size in bits.
    pub sig_key_bits: u16,
}

impl Kek {
    /// A fresh KEK (new SPI, IV and key) from `params`.
    pub fn fresh(rng: &mut dyn EngineRng, params: &KekParams) -> Self {
        Self {
            spi: rng::array(rng),
            cipher: params.cipher,
            iv: rng::array(rng),
            key: Zeroizing::new(rng::bytes(rng, params.cipher.key_len())),
            lifetime_secs: params.lifetime_secs,
            rekey_src: params.src,
            rekey_dst: params.dst,
            rekey_port: params.port,
            sig_algorithm: params.sig_algorithm,
            sig_key_spki: params.sig_key_spki.clone(),
            sig_key_bits: params.sig_key_bits,
        }
    }

    /// The parameters this KEK was made from (to make its successor).
    pub fn params(&self) -> KekParams {
        KekParams {
            src: self.rekey_src,
            dst: self.rekey_dst,
            port: self.rekey_port,
            lifetime_secs: self.lifetime_secs,
            cipher: self.cipher,
            sig_algorithm: self.sig_algorithm,
            sig_key_spki: self.sig_key_spki.clone(),
            sig_key_bits: self.sig_key_bits,
        }
    }

    /// Whether rekeys under this KEK are unicast (no multicast destination).
    pub fn is_unicast(&self) -> bool {
        !self.rekey_dst.is_multicast()
    }
}

impl Tek {
    /// A successor of `self`: same selectors, transform and lifetime, a new
    /// SPI (above 255, RFC 4303 section 2.1) and key.
    pub fn fresh(&self, rng: &mut dyn EngineRng) -> Self {
        Self {
            spi: loop {
                let s = rng.next_u32();
                if s > 255 && s != self.spi {
                    break s;
                }
            },
            key: Zeroizing::new(rng::bytes(rng, self.key.len())),
            integrity_key: Zeroizing::new(rng::bytes(rng, self.integrity_key.len())),
            ..self.clone()
        }
    }

    /// The TEK with `transform` and fresh keys of its sizes (same SPI,
    /// selectors and lifetime).
    pub fn with_transform(&self, transform: TekTransform, rng: &mut dyn EngineRng) -> Self {
        let (esp, auth) = tek_wire(transform);
        Self {
            transform: esp,
            auth,
            key: Zeroizing::new(rng::bytes(rng, transform.algorithm_key_len())),
            integrity_key: Zeroizing::new(rng::bytes(rng, transform.integrity_key_len())),
            ..self.clone()
        }
    }

    /// The policy's name for the TEK's transform, if GKM has one for it.
    pub fn transform_name(&self) -> Option<&'static str> {
        tek_transform(self.transform, self.key_bits(), self.auth).map(TekTransform::name)
    }

    /// The AES key length in bits (the SA TEK's KEY_LENGTH attribute).
    pub fn key_bits(&self) -> u16 {
        let salt = if is_gcm(self.transform) { 4 } else { 0 };
        u16::try_from(self.key.len().saturating_sub(salt) * 8).unwrap_or(u16::MAX)
    }
}

fn is_gcm(t: EspTransformId) -> bool {
    matches!(
        t,
        EspTransformId::AES_GCM_8 | EspTransformId::AES_GCM_12 | EspTransformId::AES_GCM_16
    )
}

/// The ESP transform and authentication algorithm of a policy's transform.
pub fn tek_wire(t: TekTransform) -> (EspTransformId, Option<AuthAlgorithm>) {
    match t {
        TekTransform::AesGcm128 | TekTransform::AesGcm256 => (EspTransformId::AES_GCM_16, None),
        TekTransform::AesCbc128HmacSha1 | TekTransform::AesCbc256HmacSha1 => {
            (EspTransformId::AES_CBC, Some(AuthAlgorithm::HMAC_SHA1))
        }
        TekTransform::AesCbc128HmacSha256 | TekTransform::AesCbc256HmacSha256 => {
            (EspTransformId::AES_CBC, Some(AuthAlgorithm::HMAC_SHA2_256))
        }
    }
}

/// The policy transform an SA TEK describes, if GKM implements it.
pub fn tek_transform(
    t: EspTransformId,
    key_bits: u16,
    auth: Option<AuthAlgorithm>,
) -> Option<TekTransform> {
    TekTransform::ALL
        .into_iter()
        .find(|&x| tek_wire(x) == (t, auth) && x.key_bits() == key_bits)
}

impl core::fmt::Debug for Kek {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Kek")
            .field("spi", &self.spi)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// One traffic encryption key.
#[derive(Clone, PartialEq, Eq)]
pub struct Tek {
    /// SPI.
    pub spi: u32,
    /// ESP transform (AES-GCM-16 by default, or AES-CBC).
    pub transform: EspTransformId,
    /// The separate integrity algorithm (AES-CBC: HMAC-SHA1 or
    /// HMAC-SHA2-256; none for AES-GCM).
    pub auth: Option<AuthAlgorithm>,
    /// TEK_ALGORITHM_KEY: the cipher key (‖ 4-octet salt for AES-GCM).
    pub key: Zeroizing<Vec<u8>>,
    /// TEK_INTEGRITY_KEY: the HMAC key (empty for AES-GCM).
    pub integrity_key: Zeroizing<Vec<u8>>,
    /// Protected traffic, source side (IPv4 or IPv6; the same family as
    /// `dst`).
    pub src: IpPrefix,
    /// Protected traffic, destination side.
    pub dst: IpPrefix,
    /// Lifetime in seconds.
    pub lifetime_secs: u32,
}

impl core::fmt::Debug for Tek {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tek")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("transform", &self.transform)
            .field("auth", &self.auth)
            .field("src", &self.src)
            .field("dst", &self.dst)
            .finish_non_exhaustive()
    }
}

/// Everything a registered GM holds for a group, and what the KS hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKeys {
    /// Group identity number.
    pub group_id: u32,
    /// The KEK, when the group rekeys.
    pub kek: Option<Kek>,
    /// The TEKs.
    pub teks: Vec<Tek>,
    /// SEQ of the rekey SA at registration.
    pub seq: u32,
}

/// TEK_ALGORITHM_KEY length in octets for a TEK transform: AES-GCM's
/// key and salt (RFC 4106 section 8.1), AES-CBC's key (RFC 3602).
pub fn tek_key_len(t: EspTransformId, key_bits: u16) -> Option<usize> {
    match t {
        EspTransformId::AES_GCM_8 | EspTransformId::AES_GCM_12 | EspTransformId::AES_GCM_16 => {
            matches!(key_bits, 128 | 256).then_some(usize::from(key_bits) / 8 + 4)
        }
        EspTransformId::AES_CBC => {
            matches!(key_bits, 128 | 256).then_some(usize::from(key_bits) / 8)
        }
        _ => None,
    }
}

/// TEK_INTEGRITY_KEY length in octets for an authentication algorithm
/// (RFC 2404: 20; RFC 4868: 32), if GKM implements it.
pub fn tek_integrity_key_len(a: AuthAlgorithm) -> Option<usize> {
    match a {
        AuthAlgorithm::HMAC_SHA1 => Some(20),
        AuthAlgorithm::HMAC_SHA2_256 => Some(32),
        _ => None,
    }
}

/// A GROUPKEY-PULL answer the GM cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// Policy and keys disagree or are incomplete.
    #[error("inconsistent group policy: {0}")]
    Inconsistent(&'static str),
}

impl GroupKeys {
    /// Fresh keys for a group: new KEK (when `rekey` is set) and one TEK per selector pair.
    pub fn generate<P: Into<IpPrefix> + Copy>(
        rng: &mut dyn EngineRng,
        group_id: u32,
        selectors: &[(P, P)],
        tek_lifetime_secs: u32,
        rekey: Option<&KekParams>,
    ) -> Self {
        let kek = rekey.map(|p| Kek::fresh(rng, p));
        let teks = selectors
            .iter()
            .map(|(src, dst)| Tek {
                spi: loop {
                    let s = rng.next_u32();
                    if s > 255 {
                        break s;
                    }
                },
                transform: EspTransformId::AES_GCM_16,
                auth: None,
                key: Zeroizing::new(rng::bytes(rng, 36)),
                integrity_key: Zeroizing::new(Vec::new()),
                src: (*src).into(),
                dst: (*dst).into(),
                lifetime_secs: tek_lifetime_secs,
            })
            .collect();
        Self {
            group_id,
            kek,
            teks,
            seq: 0,
        }
    }

    /// The SA payload (SAK, SATs) of PULL message 2, without KEK_ACK_REQUESTED.
    pub fn to_sa(&self) -> GdoiSa<'_> {
        self.to_sa_with(None)
    }

    /// The SA payload with the KEK_ACK_REQUESTED policy attribute a GM
    /// class gets (seed Table 1), if any.
    pub fn to_sa_with(&self, ack_requested: Option<AckRequested>) -> GdoiSa<'_> {
        GdoiSa {
            situation: 0,
            kek: self.kek.as_ref().map(|k| SaKek {
                protocol: IpProtocol::UDP.0,
                src: TrafficSelector {
                    identity: Identity::Ipv4Addr(k.rekey_src),
                    port: GDOI_PORT,
                },
                dst: TrafficSelector {
                    identity: Identity::Ipv4Addr(k.rekey_dst),
                    port: k.rekey_port,
                },
                spi: k.spi,
                policy: KekPolicy {
                    algorithm: Some(KekAlgorithm::AES),
                    key_length_bits: Some(k.cipher.key_bits()),
                    key_lifetime_secs: Some(k.lifetime_secs),
                    sig_hash_algorithm: Some(SigHashAlgorithm::SHA256),
                    sig_algorithm: Some(k.sig_algorithm),
                    sig_key_length_bits: Some(k.sig_key_bits),
                    ack_requested,
                    ..KekPolicy::default()
                },
            }),
            gap: None,
            teks: self
                .teks
                .iter()
                .map(|t| SaTek {
                    protocol_id: GdoiProtocol::IPSEC_ESP,
                    body: TekBody::Ipsec(IpsecTek {
                        protocol: 0,
                        src: TrafficSelector {
                            identity: prefix_identity(&t.src),
                            port: 0,
                        },
                        dst: TrafficSelector {
                            identity: prefix_identity(&t.dst),
                            port: 0,
                        },
                        transform_id: t.transform,
                        spi: t.spi,
                        attributes: IpsecSaAttributes {
                            life_seconds: Some(t.lifetime_secs),
                            encapsulation_mode: Some(EncapsulationMode::TUNNEL),
                            key_length_bits: Some(t.key_bits()),
                            auth_algorithm: t.auth,
                            address_preservation: Some(AddressPreservation::SOURCE_AND_DESTINATION),
                            sa_direction: Some(SaDirection::SYMMETRIC),
                            ..IpsecSaAttributes::default()
                        },
                    }),
                })
                .collect(),
            unknown: vec![],
        }
    }

    /// The KD payload of PULL message 4: one TEK packet per SAT, the KEK
    /// (IV ‖ key, signing key), and the sender IDs granted, if any.
    pub fn to_kd<'a>(
        &'a self,
        kek_material: &'a [u8],
        sids: Option<(u16, Vec<u32>)>,
    ) -> KeyDownload<'a> {
        let mut packets: Vec<KeyPacket<'a>> = self
            .teks
            .iter()
            .map(|t| {
                KeyPacket::Tek(TekKeyPacket {
                    spi: t.spi,
                    algorithm_key: Some(&t.key),
                    integrity_key: (!t.integrity_key.is_empty()).then_some(&t.integrity_key[..]),
                    ..TekKeyPacket::default()
                })
            })
            .collect();
        if let Some(k) = &self.kek {
            packets.push(KeyPacket::Kek(KekKeyPacket {
                spi: k.spi,
                algorithm_key: Some(kek_material),
                sig_algorithm_key: Some(&k.sig_key_spki),
                ..KekKeyPacket::default()
            }));
        }
        if let Some((bits, values)) = sids {
            packets.push(KeyPacket::Sid(SidKeyPacket {
                number_of_sid_bits: Some(bits),
                sid_values: values,
                ..SidKeyPacket::default()
            }));
        }
        KeyDownload { packets }
    }

    /// KEK_ALGORITHM_KEY contents: IV ‖ key.
    pub fn kek_material(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            self.kek
                .as_ref()
                .map(|k| [&k.iv[..], &k.key[..]].concat())
                .unwrap_or_default(),
        )
    }

    /// Rebuilds the keys from a PULL's SA and KD, checking that they agree.
    pub fn from_pull(
        group_id: u32,
        sa: &GdoiSa<'_>,
        kd: &KeyDownload<'_>,
        seq: u32,
    ) -> Result<(Self, Vec<u32>), GroupError> {
        let mut teks = Vec::with_capacity(sa.teks.len());
        for sat in &sa.teks {
            let t = sat
                .ipsec()
                .ok_or(GroupError::Inconsistent("SA TEK is not ESP"))?;
            if sat.protocol_id != GdoiProtocol::IPSEC_ESP {
                return Err(GroupError::Inconsistent("SA TEK is not ESP"));
            }
            if t.transform_id == EspTransformId::TRIPLE_DES {
                return Err(GroupError::Inconsistent(
                    "SA TEK transform ESP_3DES (RFC 8221: MUST NOT)",
                ));
            }
            let packet = kd
                .packets
                .iter()
                .find_map(|p| match p {
                    KeyPacket::Tek(k) if k.spi == t.spi => Some(k),
                    _ => None,
                })
                .ok_or(GroupError::Inconsistent("no TEK key packet for an SA TEK"))?;
            let key = packet.algorithm_key.ok_or(GroupError::Inconsistent(
                "TEK key packet has no TEK_ALGORITHM_KEY",
            ))?;
            let bits = t.attributes.key_length_bits.unwrap_or(128);
            if tek_key_len(t.transform_id, bits) != Some(key.len()) {
                return Err(GroupError::Inconsistent(
                    "TEK key length does not match its transform",
                ));
            }
            let auth = t.attributes.auth_algorithm;
            let integrity = packet.integrity_key.unwrap_or_default();
            match (is_gcm(t.transform_id), auth) {
                (true, None) if integrity.is_empty() => {}
                (true, _) => {
                    return Err(GroupError::Inconsistent(
                        "AES-GCM SA TEK with an authentication algorithm or integrity key",
                    ))
                }
                (false, None) => {
                    return Err(GroupError::Inconsistent(
                        "SA TEK AES-CBC without an authentication algorithm",
                    ))
                }
                (false, Some(a)) => {
                    match tek_integrity_key_len(a) {
                        None => {
                            return Err(GroupError::Inconsistent(
                                "SA TEK authentication algorithm (HMAC-SHA or HMAC-SHA2-256)",
                            ))
                        }
                        Some(n) if n != integrity.len() => return Err(GroupError::Inconsistent(
                            "TEK_INTEGRITY_KEY length does not match the authentication algorithm",
                        )),
                        Some(_) => {}
                    }
                }
            }
            let src = prefix_from_identity(&t.src.identity)
                .ok_or(GroupError::Inconsistent("TEK source selector"))?;
            let dst = prefix_from_identity(&t.dst.identity)
                .ok_or(GroupError::Inconsistent("TEK destination selector"))?;
            if src.is_ipv6() != dst.is_ipv6() {
                // Address preservation: the outer packet is of the inner
                // packet's family, so one SA protects one family.
                return Err(GroupError::Inconsistent(
                    "TEK source and destination selectors of different IP families",
                ));
            }
            teks.push(Tek {
                spi: t.spi,
                transform: t.transform_id,
                auth,
                key: Zeroizing::new(key.to_vec()),
                integrity_key: Zeroizing::new(integrity.to_vec()),
                src,
                dst,
                lifetime_secs: t.attributes.life_seconds.unwrap_or(3600),
            });
        }
        let kek = match &sa.kek {
            None => None,
            Some(sak) => {
                let cipher = match (sak.policy.algorithm, sak.policy.key_length_bits) {
                    (Some(KekAlgorithm::AES), Some(128)) => CbcCipher::Aes128,
                    (Some(KekAlgorithm::AES), Some(256)) => CbcCipher::Aes256,
                    _ => return Err(GroupError::Inconsistent("KEK algorithm")),
                };
                let p = kd
                    .packets
                    .iter()
                    .find_map(|p| match p {
                        KeyPacket::Kek(k) if k.spi == sak.spi => Some(k),
                        _ => None,
                    })
                    .ok_or(GroupError::Inconsistent("no KEK key packet for the SA KEK"))?;
                let material = p
                    .algorithm_key
                    .ok_or(GroupError::Inconsistent("KEK key missing"))?;
                if material.len() != 16 + cipher.key_len() {
                    return Err(GroupError::Inconsistent("KEK key length"));
                }
                let (iv, key) = material.split_at(16);
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(iv);
                let addr = |s: &TrafficSelector<'_>| match s.identity {
                    Identity::Ipv4Addr(a) => Some(a),
                    _ => None,
                };
                Some(Kek {
                    spi: sak.spi,
                    cipher,
                    iv: ivb,
                    key: Zeroizing::new(key.to_vec()),
                    lifetime_secs: sak.policy.key_lifetime_secs.unwrap_or(86_400),
                    rekey_src: addr(&sak.src).ok_or(GroupError::Inconsistent("KEK source"))?,
                    rekey_dst: addr(&sak.dst).ok_or(GroupError::Inconsistent("KEK destination"))?,
                    rekey_port: sak.dst.port,
                    sig_algorithm: sak
                        .policy
                        .sig_algorithm
                        .ok_or(GroupError::Inconsistent("KEK signature algorithm"))?,
                    sig_key_spki: p
                        .sig_algorithm_key
                        .ok_or(GroupError::Inconsistent("rekey signing key missing"))?
                        .to_vec(),
                    sig_key_bits: sak.policy.sig_key_length_bits.unwrap_or(0),
                })
            }
        };
        let sids = kd
            .packets
            .iter()
            .find_map(|p| match p {
                KeyPacket::Sid(s) => Some(s.sid_values.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok((
            Self {
                group_id,
                kek,
                teks,
                seq,
            },
            sids,
        ))
    }
}
