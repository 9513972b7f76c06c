//! The routing state the agent owns (iproute2): the mark rule that keeps
//! its own packets out of the TUN device, and a rule and a route per
//! protected prefix, in each IP family (`ip -4` / `ip -6`, one table
//! number and the same preferences in both); all removed on drop and
//! after a crash.

use std::process::Command;

use anyhow::{bail, Context, Result};
use gkm_proto::group::IpPrefix;
use tracing::{debug, info};

use super::Settings;

/// Runs `ip` with `args`; `ok_if` lists error texts that mean "already so".
pub(super) fn ip(args: &[&str], ok_if: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || ok_if.iter().any(|e| err.contains(e)) {
        Ok(())
    } else {
        bail!("ip {}: {}", args.join(" "), err.trim())
    }
}

/// The routing state the agent owns; removed on drop.
pub struct Routes {
    s: Settings,
    prefixes: Vec<IpPrefix>,
    /// Whether the IPv6 mark rule is in place (not on a host without IPv6).
    v6: bool,
}

/// `ip`'s family flag for a prefix.
fn family(p: &IpPrefix) -> &'static str {
    if p.is_ipv6() {
        "-6"
    } else {
        "-4"
    }
}

impl Routes {
    /// Removes what an earlier (crashed) agent with these settings left,
    /// then installs the mark rule in both families (IPv6 only where the
    /// host has it).
    pub fn new(s: &Settings) -> Result<Self> {
        let mut r = Self {
            s: s.clone(),
            prefixes: Vec::new(),
            v6: false,
        };
        r.clear();
        let pref = s.rule_pref.to_string();
        let mark = format!("{:#x}", s.fwmark);
        let rule = |fam: &str| {
            ip(
                &[
                    fam, "rule", "add", "pref", &pref, "fwmark", &mark, "lookup", "main",
                ],
                &["File exists"],
            )
        };
        rule("-4")?;
        match rule("-6") {
            Ok(()) => r.v6 = true,
            Err(e) => debug!(error = %e, "no IPv6 mark rule: IPv6 prefixes cannot be protected"),
        }
        Ok(r)
    }

    fn clear(&self) {
        let table = self.s.table.to_string();
        for fam in ["-4", "-6"] {
            for pref in [self.s.rule_pref, self.s.rule_pref + 1] {
                // Every rule at our preferences (one per prefix), until none is left.
                for _ in 0..1000 {
                    if ip(&[fam, "rule", "del", "pref", &pref.to_string()], &[]).is_err() {
                        break;
                    }
                }
            }
            let _ = ip(&[fam, "route", "flush", "table", &table], &[]);
        }
    }

    /// Sends the group's destination prefixes into the TUN device.
    pub fn protect(&mut self, prefixes: &[IpPrefix]) -> Result<()> {
        let table = self.s.table.to_string();
        let pref = (self.s.rule_pref + 1).to_string();
        for p in prefixes {
            if self.prefixes.contains(p) {
                continue;
            }
            if p.is_ipv6() && !self.v6 {
                bail!("cannot protect {p}: this host has no IPv6 policy routing");
            }
            let dst = p.to_string();
            let fam = family(p);
            ip(
                &[
                    fam,
                    "route",
                    "replace",
                    &dst,
                    "dev",
                    &self.s.device,
                    "table",
                    &table,
                ],
                &[],
            )?;
            ip(
                &[
                    fam, "rule", "add", "pref", &pref, "to", &dst, "lookup", &table,
                ],
                &["File exists"],
            )?;
            info!(prefix = %dst, device = %self.s.device, "protecting");
            self.prefixes.push(*p);
        }
        Ok(())
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.clear();
        debug!("routes and rules removed");
    }
}
