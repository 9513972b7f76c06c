//! `gkmctl`: the GKM operator CLI.
//!
//! Owns (DESIGN.md): a REST client for `/api/v1` and the `show crypto gkm
//! ...` text layouts network engineers read, plus `--json`. The REST API
//! lands with the controller-core issue; until then every command says so.

use anyhow::{bail, Result};
use clap::Parser;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "gkmctl", version, about = "GKM operator CLI")]
struct Args {
    /// Controller URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "GKM_URL")]
    url: String,
    /// The command, e.g. `show crypto gkm ks policy`.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    bail!(
        "gkmctl {}: `{}` needs the controller REST API at {}, which is not in this build (controller-core issue)",
        env!("CARGO_PKG_VERSION"),
        args.command.join(" "),
        args.url
    )
}
