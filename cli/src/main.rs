//! `gkmctl`: the GKM operator CLI.
//!
//! Owns (DESIGN.md): a REST client for `/api/v1` and the `show crypto gkm
//! ...` text layouts network engineers read, plus `--json`; group, rekey,
//! GM and token commands.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use gkmctl::client::Client;
use gkmctl::show;
use serde_json::{json, Value};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "gkmctl", version, about = "GKM operator CLI")]
struct Args {
    /// Controller URL.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "GKM_URL"
    )]
    url: String,
    /// API token (gkm_...).
    #[arg(long, global = true, env = "GKM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the API token (default: gkm-data/admin-token, the
    /// bootstrap admin token of a server started in this directory).
    #[arg(long, global = true, env = "GKM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM trust anchors for the controller's certificate (a private CA);
    /// default: the public web PKI roots.
    #[arg(long, global = true, env = "GKM_CA")]
    ca: Option<PathBuf>,
    /// Print the API's JSON instead of the text layout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// `show crypto gkm [ks [policy|rekey|replay]]`, `show crypto gkm feature ip-d3p|gdoi-interop-ack`.
    Show {
        /// The words after `show`.
        #[arg(num_args = 1.., required = true)]
        words: Vec<String>,
        /// Feature view: only the devices lacking the feature (the seed's `| include no`).
        #[arg(long)]
        lacking: bool,
        /// `gm replay`: the agent's status socket, or a directory of them.
        #[arg(long, default_value = gkmctl::agent::DEFAULT_DIR)]
        agent: PathBuf,
        /// `gm replay` from the controller instead: the GM's last health
        /// report (needs --group).
        #[arg(long, requires = "group")]
        gm: Option<String>,
        /// The group of --gm, by name.
        #[arg(long)]
        group: Option<String>,
    },
    /// Groups.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Rekey a group now, or send it a rekey replace.
    Rekey {
        /// `now` or `replace`.
        kind: String,
        /// Group name.
        group: String,
    },
    /// Group members.
    Gm {
        #[command(subcommand)]
        cmd: GmCmd,
    },
    /// API tokens (admin).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Setup keys: what `gkm-agent enroll` joins hosts with.
    SetupKey {
        #[command(subcommand)]
        cmd: SetupKeyCmd,
    },
    /// Enrolled agents.
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
}

#[derive(Debug, Subcommand)]
enum SetupKeyCmd {
    /// Create a setup key; the key is printed once.
    Create {
        /// Name.
        name: String,
        /// A group its agents join, by name (repeat the flag).
        #[arg(long = "group", required = true)]
        groups: Vec<String>,
        /// A tag its agents carry (repeat the flag).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Reusable (default: single-use).
        #[arg(long)]
        reusable: bool,
        /// A reusable key's limit on enrollments.
        #[arg(long, requires = "reusable")]
        usage_limit: Option<u32>,
        /// Seconds it stays valid (60-31622400, default 86400).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List setup keys (never the keys).
    List,
    /// Delete a setup key (its agents stay).
    Delete {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// List enrolled agents.
    List,
    /// Revoke an agent: its token at once, its certificate at its next
    /// phase 1, ejected from its groups with a rekey.
    Revoke {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCmd {
    /// Create a group from a policy file (JSON).
    Create {
        /// Name.
        name: String,
        /// Group ID: the GDOI group identity number, 1-4294967295
        /// (`--identity` in GKM 0.1).
        #[arg(long, alias = "identity")]
        group_id: u32,
        /// Policy file (JSON; see docs/openapi.json, GroupPolicy).
        #[arg(long)]
        policy: PathBuf,
    },
    /// Replace a group's policy.
    Set {
        /// Name.
        name: String,
        /// Policy file (JSON).
        #[arg(long)]
        policy: PathBuf,
        /// Only if the group is still at this version.
        #[arg(long)]
        version: Option<i64>,
    },
    /// Show one group or all.
    Show {
        /// Name.
        name: Option<String>,
    },
    /// Delete a group.
    Delete {
        /// Name.
        name: String,
    },
    /// Rotate a group's PSK (read from a file, or standard input with `-`).
    SetPsk {
        /// Name.
        name: String,
        /// File holding the key (trailing newline dropped).
        #[arg(long)]
        psk_file: PathBuf,
    },
    /// Clear a group's PSK (it then takes the configuration file's keyring).
    ClearPsk {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum GmCmd {
    /// List GMs.
    List {
        /// Group identity number.
        #[arg(long)]
        group: Option<u32>,
        /// registered, lagging or removed.
        #[arg(long)]
        state: Option<String>,
        /// cisco, asr9000 or non-cisco.
        #[arg(long)]
        class: Option<String>,
    },
    /// Eject a GM: no more rekeys until it registers again.
    Eject {
        /// Group name.
        group: String,
        /// The GM's phase 1 identity (e.g. its address).
        gm_identity: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token; its secret is printed once.
    Create {
        /// Name.
        name: String,
        /// agent (health reports only), viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Agent tokens: the group ID of the GM's group.
        #[arg(long, requires = "gm_identity")]
        gm_group: Option<u32>,
        /// Agent tokens: the GM's phase 1 identity (e.g. its address).
        #[arg(long, requires = "gm_group")]
        gm_identity: Option<String>,
    },
    /// List tokens.
    List,
    /// Delete a token.
    Delete {
        /// Name.
        name: String,
    },
}

fn token(args: &Args) -> Result<Option<String>> {
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    let path = args
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("gkm-data/admin-token"));
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_owned())),
        Err(_) if args.token_file.is_none() => Ok(None),
        Err(e) => Err(anyhow!(
            "cannot read the token file {}: {e}",
            path.display()
        )),
    }
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Groups and their live status.
fn groups_with_status(c: &Client) -> Result<(Vec<Value>, Vec<Value>)> {
    let groups: Vec<Value> = c
        .call("GET", "/api/v1/groups", None)?
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut statuses = Vec::new();
    for g in &groups {
        let name = g["name"].as_str().unwrap_or_default();
        statuses.push(
            c.call("GET", &format!("/api/v1/groups/{}/status", enc(name)), None)
                .unwrap_or(Value::Null),
        );
    }
    Ok((groups, statuses))
}

/// Percent-encodes a path segment.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn show_cmd(c: &Client, words: &[String], lacking: bool, as_json: bool) -> Result<String> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let rest = match w.as_slice() {
        ["crypto", "gkm", rest @ ..] => rest,
        _ => bail!("usage: gkmctl show crypto gkm [ks [policy|rekey|replay] | feature ip-d3p|gdoi-interop-ack]"),
    };
    if let ["feature", name] = rest {
        if !["ip-d3p", "gdoi-interop-ack"].contains(name) {
            bail!("feature {name:?}: use ip-d3p or gdoi-interop-ack");
        }
        let groups: Vec<Value> = c
            .call("GET", "/api/v1/groups", None)?
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut out = String::new();
        let mut all = Vec::new();
        for g in &groups {
            let id = g["group_id"].as_u64().unwrap_or(0);
            let mut gms = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = format!("/api/v1/gms?group={id}&feature={name}&limit=1000");
                if lacking {
                    q.push_str("&supported=no");
                }
                if let Some(a) = &after {
                    q.push_str(&format!("&after={}", enc(a)));
                }
                let page = c.call("GET", &q, None)?;
                for m in page["gms"].as_array().cloned().unwrap_or_default() {
                    gms.push(m);
                }
                match page["next"].as_str() {
                    Some(n) => after = Some(n.to_owned()),
                    None => break,
                }
            }
            let bit = match *name {
                "ip-d3p" => 1,
                _ => 2,
            };
            // A device's row: a GM or a key server, both as the API lists them.
            let row = |m: &Value| {
                (
                    m["gm_identity"].as_str().unwrap_or("-").to_owned(),
                    m["version"].as_str().unwrap_or("-").to_owned(),
                    m["features"].as_u64().unwrap_or(0) & bit != 0,
                )
            };
            let rows: Vec<(String, String, bool)> = gms.iter().map(row).collect();
            let status = c
                .call(
                    "GET",
                    &format!(
                        "/api/v1/groups/{}/status",
                        enc(g["name"].as_str().unwrap_or("-"))
                    ),
                    None,
                )
                .unwrap_or(Value::Null);
            let key_servers: Vec<Value> = status["key_servers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|k| !(lacking && k["features"].as_u64().unwrap_or(0) & bit != 0))
                .collect();
            let ks_rows: Vec<(String, String, bool)> = key_servers.iter().map(row).collect();
            all.push(json!({"group": g["name"], "key_servers": key_servers, "gms": gms}));
            out.push_str(&show::feature(
                g["name"].as_str().unwrap_or("-"),
                &ks_rows,
                &rows,
            ));
            out.push('\n');
        }
        return Ok(if as_json {
            serde_json::to_string_pretty(&all)?
        } else {
            out
        });
    }
    if rest == ["ks", "coop"] {
        let groups: Vec<Value> = c
            .call("GET", "/api/v1/groups", None)?
            .as_array()
            .cloned()
            .unwrap_or_default();
        // A group without COOP answers 404: shown as the vendor does.
        let coops: Vec<Value> = groups
            .iter()
            .map(|g| {
                let name = g["name"].as_str().unwrap_or_default();
                c.call("GET", &format!("/api/v1/groups/{}/coop", enc(name)), None)
                    .unwrap_or(Value::Null)
            })
            .collect();
        return Ok(if as_json {
            let v: Vec<Value> = groups
                .iter()
                .zip(&coops)
                .map(|(g, k)| json!({"group": g["name"], "coop": k}))
                .collect();
            serde_json::to_string_pretty(&v)?
        } else {
            show::ks_coop(&groups, &coops)
        });
    }
    let (groups, statuses) = groups_with_status(c)?;
    if as_json {
        let v: Vec<Value> = groups
            .iter()
            .zip(&statuses)
            .map(|(g, s)| json!({"group": g, "status": s}))
            .collect();
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    Ok(match rest {
        [] => show::gkm(&groups, &statuses),
        ["ks"] => show::ks(&groups, &statuses),
        ["ks", "policy"] => show::ks_policy(&groups, &statuses),
        ["ks", "rekey"] => show::ks_rekey(&groups, &statuses),
        ["ks", "replay"] => show::ks_replay(&groups),
        ["gm", "replay"] => {
            bail!("show crypto gkm gm replay is answered by the agent (--agent PATH)")
        }
        _ => bail!("unknown show command `show crypto gkm {}`", rest.join(" ")),
    })
}

fn gm_replay(agent: &std::path::Path, as_json: bool) -> Result<String> {
    let groups = gkmctl::agent::replay(agent)?;
    Ok(if as_json {
        serde_json::to_string_pretty(&groups)?
    } else {
        show::gm_replay(&groups)
    })
}

fn run(args: &Args) -> Result<String> {
    // Answered by the local agent, before any controller token is looked for.
    let mut reported = None;
    if let Cmd::Show {
        words,
        agent,
        gm,
        group,
        ..
    } = &args.command
    {
        if words
            .iter()
            .map(String::as_str)
            .eq(["crypto", "gkm", "gm", "replay"])
        {
            match (gm, group) {
                (Some(gm), Some(group)) => reported = Some((gm, group)),
                _ => return gm_replay(agent, args.json),
            }
        }
    }
    let c = match &args.ca {
        None => Client::new(&args.url, token(args)?),
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Client::with_ca(&args.url, token(args)?, &pem)
                .map_err(|e| anyhow::anyhow!("--ca {}: {e}", p.display()))?
        }
    };
    let pretty = |v: Value| -> Result<String> { Ok(serde_json::to_string_pretty(&v)?) };
    if let Some((gm, group)) = reported {
        let v = c.call(
            "GET",
            &format!("/api/v1/groups/{}/gms/{}/health", enc(group), enc(gm)),
            None,
        )?;
        if args.json {
            return pretty(v);
        }
        let replay = gkm_model::health::GroupReplay {
            group: v["group"]
                .as_u64()
                .and_then(|g| u32::try_from(g).ok())
                .unwrap_or(0),
            name: group.clone(),
            d3p_window_ms: serde_json::from_value(v["d3p_window_ms"].clone())?,
            d3p_window_source: serde_json::from_value(v["d3p_window_source"].clone())?,
            posix_time_ms: v["agent_time_ms"].as_u64().unwrap_or(0),
            counters: serde_json::from_value(v["counters"].clone())
                .context("the controller's health report")?,
        };
        return Ok(show::gm_replay(&[replay]));
    }
    match &args.command {
        Cmd::Show { words, lacking, .. } => show_cmd(&c, words, *lacking, args.json),
        Cmd::Group { cmd } => match cmd {
            GroupCmd::Create {
                name,
                group_id,
                policy,
            } => pretty(c.call(
                "POST",
                "/api/v1/groups",
                Some(&json!({"name": name, "group_id": group_id, "policy": read_json(policy)?})),
            )?),
            GroupCmd::Set {
                name,
                policy,
                version,
            } => pretty(c.call(
                "PUT",
                &format!("/api/v1/groups/{}", enc(name)),
                Some(&json!({"policy": read_json(policy)?, "version": version})),
            )?),
            GroupCmd::Show { name: Some(n) } => {
                pretty(c.call("GET", &format!("/api/v1/groups/{}", enc(n)), None)?)
            }
            GroupCmd::Show { name: None } => pretty(c.call("GET", "/api/v1/groups", None)?),
            GroupCmd::Delete { name } => {
                c.call("DELETE", &format!("/api/v1/groups/{}", enc(name)), None)?;
                Ok(format!("group {name} deleted"))
            }
            GroupCmd::SetPsk { name, psk_file } => {
                let text = if psk_file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading the PSK")?
                } else {
                    std::fs::read_to_string(psk_file)
                        .with_context(|| format!("cannot read {}", psk_file.display()))?
                };
                let psk = text.trim_end_matches(['\r', '\n']);
                c.call(
                    "PUT",
                    &format!("/api/v1/groups/{}/psk", enc(name)),
                    Some(&json!({ "psk": psk })),
                )?;
                Ok(format!("PSK of group {name} rotated"))
            }
            GroupCmd::ClearPsk { name } => {
                c.call("DELETE", &format!("/api/v1/groups/{}/psk", enc(name)), None)?;
                Ok(format!("PSK of group {name} cleared"))
            }
        },
        Cmd::Rekey { kind, group } => {
            let replace = match kind.as_str() {
                "now" => false,
                "replace" => true,
                other => bail!("rekey {other:?}: use `rekey now GROUP` or `rekey replace GROUP`"),
            };
            let v = c.call(
                "POST",
                &format!("/api/v1/groups/{}/rekey", enc(group)),
                Some(&json!({"replace": replace})),
            )?;
            if args.json {
                pretty(v)
            } else {
                Ok(format!(
                    "{} of group {group} started",
                    if replace { "rekey replace" } else { "rekey" }
                ))
            }
        }
        Cmd::Gm { cmd } => match cmd {
            GmCmd::List {
                group,
                state,
                class,
            } => {
                let mut q = String::from("/api/v1/gms?limit=1000");
                if let Some(g) = group {
                    q.push_str(&format!("&group={g}"));
                }
                if let Some(s) = state {
                    q.push_str(&format!("&state={}", enc(s)));
                }
                if let Some(k) = class {
                    q.push_str(&format!("&class={}", enc(k)));
                }
                pretty(c.call("GET", &q, None)?)
            }
            GmCmd::Eject { group, gm_identity } => {
                c.call(
                    "DELETE",
                    &format!("/api/v1/groups/{}/gms/{}", enc(group), enc(gm_identity)),
                    None,
                )?;
                Ok(format!("GM {gm_identity} ejected from group {group}"))
            }
        },
        Cmd::Token { cmd } => match cmd {
            TokenCmd::Create {
                name,
                role,
                gm_group,
                gm_identity,
            } => {
                let mut body = json!({"name": name, "role": role});
                if let (Some(group), Some(gm_identity)) = (gm_group, gm_identity) {
                    body["gm"] = json!({"group": group, "gm_identity": gm_identity});
                }
                pretty(c.call("POST", "/api/v1/tokens", Some(&body))?)
            }
            TokenCmd::List => pretty(c.call("GET", "/api/v1/tokens", None)?),
            TokenCmd::Delete { name } => {
                c.call("DELETE", &format!("/api/v1/tokens/{}", enc(name)), None)?;
                Ok(format!("token {name} deleted"))
            }
        },
        Cmd::SetupKey { cmd } => match cmd {
            SetupKeyCmd::Create {
                name,
                groups,
                tags,
                reusable,
                usage_limit,
                expires_in,
            } => {
                let body = json!({
                    "name": name, "groups": groups, "tags": tags, "reusable": reusable,
                    "usage_limit": usage_limit, "expires_in_secs": expires_in,
                });
                pretty(c.call("POST", "/api/v1/setup-keys", Some(&body))?)
            }
            SetupKeyCmd::List => pretty(c.call("GET", "/api/v1/setup-keys", None)?),
            SetupKeyCmd::Delete { name } => {
                c.call("DELETE", &format!("/api/v1/setup-keys/{}", enc(name)), None)?;
                Ok(format!("setup key {name} deleted"))
            }
        },
        Cmd::Agent { cmd } => match cmd {
            AgentCmd::List => pretty(c.call("GET", "/api/v1/agents", None)?),
            AgentCmd::Revoke { name } => {
                c.call(
                    "POST",
                    &format!("/api/v1/agents/{}/revoke", enc(name)),
                    None,
                )?;
                Ok(format!("agent {name} revoked"))
            }
        },
    }
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
        }
        Err(e) => {
            eprintln!("gkmctl: {e:#}");
            std::process::exit(1);
        }
    }
}
