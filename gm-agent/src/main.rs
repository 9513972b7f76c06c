//! `gkm-agent`: the GKM group member.
//!
//! Owns (DESIGN.md): the UDP driver around the group-member engine,
//! installing keys into the dataplane, health reports to the controller,
//! and enrollment. Registration lands with the GROUPKEY-PULL issue; until
//! then the agent validates its options and says plainly that it cannot
//! register yet, rather than pretending to.

use std::net::SocketAddr;

use anyhow::{bail, Result};
use clap::Parser;
use gkm_proto::policy::D3pWindow;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "gkm-agent", version, about = "GKM group member agent")]
struct Args {
    /// Key servers to register to, in order of preference.
    #[arg(long = "key-server", required = true)]
    key_servers: Vec<SocketAddr>,
    /// Group identity number.
    #[arg(long)]
    group: u32,
    /// Local IP-D3P window override, `sec S` (1-100) or `msec M` (100-10000).
    #[arg(long = "client-d3p-window")]
    client_d3p_window: Option<D3pWindow>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    bail!(
        "gkm-agent {}: registration to {:?} for group {} is not implemented in this build \
         (GROUPKEY-PULL issue); options are valid{}",
        env!("CARGO_PKG_VERSION"),
        args.key_servers,
        args.group,
        args.client_d3p_window
            .map(|w| format!(", client d3p window {w}"))
            .unwrap_or_default()
    )
}
