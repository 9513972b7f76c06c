//! The routing state the agent owns (iproute2): the mark rule that keeps
//! its own packets out of the TUN device, and a rule and a route per
//! protected prefix; all removed on drop and after a crash.

use std::process::Command;

use anyhow::{bail, Context, Result};
use gkm_proto::group::Ipv4Prefix;
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
    prefixes: Vec<Ipv4Prefix>,
}

impl Routes {
    /// Removes what an earlier (crashed) agent with these settings left,
    /// then installs the mark rule.
    pub fn new(s: &Settings) -> Result<Self> {
        let r = Self {
            s: s.clone(),
            prefixes: Vec::new(),
        };
        r.clear();
        let pref = s.rule_pref.to_string();
        let mark = format!("{:#x}", s.fwmark);
        ip(
            &[
                "rule", "add", "pref", &pref, "fwmark", &mark, "lookup", "main",
            ],
            &["File exists"],
        )?;
        Ok(r)
    }

    fn clear(&self) {
        let table = self.s.table.to_string();
        for pref in [self.s.rule_pref, self.s.rule_pref + 1] {
            // Every rule at our preferences (one per prefix), until none is left.
            for _ in 0..1000 {
                if ip(&["rule", "del", "pref", &pref.to_string()], &[]).is_err() {
                    break;
                }
            }
        }
        let _ = ip(&["route", "flush", "table", &table], &[]);
    }

    /// Sends the group's destination prefixes into the TUN device.
    pub fn protect(&mut self, prefixes: &[Ipv4Prefix]) -> Result<()> {
        let table = self.s.table.to_string();
        let pref = (self.s.rule_pref + 1).to_string();
        for p in prefixes {
            if self.prefixes.contains(p) {
                continue;
            }
            let dst = p.to_string();
            ip(
                &[
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
                &["rule", "add", "pref", &pref, "to", &dst, "lookup", &table],
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
