//! The `show crypto gkm ...` layouts network engineers already read, from
//! the API's JSON. Field names and order follow docs/FEATURES.md
//! sections 1, 4 and 5; values come only from the controller.

use std::fmt::Write as _;

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn transport(policy: &Value) -> &'static str {
    if policy["rekey"]["transport"] == "multicast" {
        "Multicast"
    } else {
        "Unicast"
    }
}

fn ack_cfg(group: &Value) -> String {
    match group["acknowledgement"].as_str().unwrap_or("cisco") {
        "cisco" => "Cisco".into(),
        "interoperable" => "Interoperable".into(),
        "any" => "Any".into(),
        _ => "None".into(),
    }
}

/// `show crypto gkm`: one block per group. `statuses` are the groups'
/// `/status` answers (Null where the engine does not serve the group).
pub fn gkm(groups: &[Value], statuses: &[Value]) -> String {
    let mut out = String::new();
    for (g, st) in groups.iter().zip(statuses) {
        let kek = &st["kek"];
        let _ = writeln!(out, "GROUP INFORMATION\n");
        let _ = writeln!(out, "    Group Name               : {}", s(&g["name"]));
        let _ = writeln!(out, "    Group Identity           : {}", s(&g["group_id"]));
        let _ = writeln!(out, "    Group Type               : GDOI (ISAKMP)");
        let _ = writeln!(
            out,
            "    Rekey Transport          : {}",
            transport(&g["policy"])
        );
        let _ = writeln!(
            out,
            "    Group Rekey Lifetime     : {} secs",
            s(&g["policy"]["kek"]["lifetime"])
        );
        let _ = writeln!(
            out,
            "    Remaining Lifetime       : {} secs",
            s(&kek["remaining_lifetime_secs"])
        );
        let _ = writeln!(
            out,
            "    Time to Rekey            : {} secs",
            s(&kek["time_to_rekey_secs"])
        );
        let _ = writeln!(out, "    Acknowledgement Cfg      : {}\n", ack_cfg(g));
    }
    out
}

/// `show crypto gkm ks`.
pub fn ks(groups: &[Value], statuses: &[Value]) -> String {
    let total: u64 = statuses
        .iter()
        .map(|st| st["rekey"]["gms"].as_u64().unwrap_or(0))
        .sum();
    let mut out = format!("Total group members registered to this box: {total}\n\n");
    for (g, st) in groups.iter().zip(statuses) {
        let n = st["rekey"]["gms"].as_u64().unwrap_or(0);
        let _ = writeln!(out, "Key Server Information For Group {}:", s(&g["name"]));
        let _ = writeln!(out, "    Group Name               : {}", s(&g["name"]));
        let _ = writeln!(out, "    Group Identity           : {}", s(&g["group_id"]));
        let _ = writeln!(out, "    Group Type               : GDOI (ISAKMP)");
        let _ = writeln!(
            out,
            "    Group Members            : {n} (GDOI: {n}, G-IKEv2: 0)"
        );
        let _ = writeln!(out, "    Rekey Acknowledgement Cfg: {}", ack_cfg(g));
        let _ = writeln!(out, "    IPSec SA Direction       : Both\n");
    }
    out
}

/// `show crypto gkm ks rekey`.
pub fn ks_rekey(groups: &[Value], statuses: &[Value]) -> String {
    let mut out = String::new();
    for (g, st) in groups.iter().zip(statuses) {
        let r = &st["rekey"];
        let _ = writeln!(out, "Group {} ({})", s(&g["name"]), transport(&g["policy"]));
        let _ = writeln!(
            out,
            "    Acknowledgement Type In-Use : {}",
            s(&r["ack_type_in_use"])
        );
        let _ = writeln!(
            out,
            "    Number of Rekeys sent       : {}\n",
            s(&r["rekeys_sent"])
        );
    }
    out
}

/// `show crypto gkm ks coop`: the fields of the vendor's `show crypto
/// gdoi ks coop detail`, one block per group.
pub fn ks_coop(groups: &[Value], coops: &[Value]) -> String {
    let mut out = String::new();
    for (g, k) in groups.iter().zip(coops) {
        let _ = writeln!(out, "Crypto Gdoi Group Name :{}", s(&g["name"]));
        if k.is_null() {
            out.push_str("\t*NO* redundancy configured for this group\n\n");
            continue;
        }
        let _ = writeln!(
            out,
            "\tGroup handle: {}, Local Key Server handle: {}\n",
            s(&g["group_id"]),
            s(&g["group_id"])
        );
        let _ = writeln!(out, "\tLocal Address: {}", s(&k["local_address"]));
        let _ = writeln!(out, "\tLocal Priority: {}", s(&k["local_priority"]));
        let _ = writeln!(
            out,
            "\tLocal KS Role: {} , Local KS Status: Alive",
            s(&k["local_role"])
        );
        let _ = writeln!(out, "\tLocal KS version: {}", s(&k["local_version"]));
        for m in k["mismatches"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "\t{}", s(m));
        }
        let _ = writeln!(out, "\tLocal COOP version: 1.0.0 (GKM COOP, docs/COOP.md)");
        let _ = writeln!(
            out,
            "\tEpoch: {}, Primary: {}",
            s(&k["epoch"]),
            s(&k["primary"])
        );
        if k["local_role"] == "Primary" {
            out.push_str("\tPrimary Timers:\n");
            let _ = writeln!(
                out,
                "\t\tPrimary Refresh Policy Time: {}",
                s(&k["refresh_secs"])
            );
            let _ = writeln!(out, "\t\tRemaining Time: {}", s(&k["remaining_secs"]));
        } else {
            out.push_str("\tSecondary Timers:\n");
            let _ = writeln!(
                out,
                "\t\tSec Primary Periodic Time: {}",
                s(&k["check_secs"])
            );
            let _ = writeln!(
                out,
                "\t\tRemaining Time: {}, Dead after: {} periods",
                s(&k["remaining_secs"]),
                s(&k["dead_periods"])
            );
            let _ = writeln!(
                out,
                "\t\tInvalid ANN PST recvd: {}",
                s(&k["invalid_ann_received"])
            );
            let blocking = if k["new_gm_blocking"] == true {
                "Yes"
            } else {
                "No"
            };
            let _ = writeln!(out, "\t\tNew GM Temporary Blocking Enforced?: {blocking}");
        }
        let _ = writeln!(
            out,
            "\t\tAntireplay Sequence Number: {}\n",
            s(&k["antireplay_seq"])
        );
        // GKM's own: the GM database sync (docs/COOP.md).
        let _ = writeln!(
            out,
            "\tGM database sync: {} GMs in the journal, {} gaps\n",
            s(&k["gm_journal"]),
            s(&k["gm_sync_gaps"])
        );
        // GKM's own: COOP messages refused, by reason (docs/COOP.md).
        let refused: Vec<String> = k["refused"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(r, n)| format!("{r} {}", s(n)))
            .collect();
        let _ = writeln!(
            out,
            "\tMessages refused: {}, Not a peer: {}\n",
            if refused.is_empty() {
                "none".to_owned()
            } else {
                refused.join(", ")
            },
            s(&k["not_a_peer"])
        );
        out.push_str("\tPeer Sessions:\n");
        for (i, p) in k["peers"].as_array().into_iter().flatten().enumerate() {
            let _ = writeln!(out, "\tSession {}:", i + 1);
            let _ = writeln!(out, "\t\tPeer Address: {}", s(&p["address"]));
            let _ = writeln!(out, "\t\tPeer Version: {}", s(&p["version"]));
            out.push_str("\t\tCOOP Protocol: base\n");
            let _ = writeln!(out, "\t\tPeer Priority: {}", s(&p["priority"]));
            let _ = writeln!(
                out,
                "\t\tPeer KS Role: {} , Peer KS Status: {}",
                s(&p["role"]),
                s(&p["status"])
            );
            let _ = writeln!(
                out,
                "\t\tAntireplay Sequence Number: {}",
                s(&p["antireplay_seq"])
            );
            let _ = writeln!(out, "\t\tIKE status: {}", s(&p["ike_status"]));
            out.push_str("\t\tCounters:\n");
            for (label, key) in [
                ("Ann msgs sent", "ann_sent"),
                ("Ann msgs sent with reply request", "ann_sent_reply_request"),
                ("Ann msgs recv", "ann_received"),
                (
                    "Ann msgs recv with reply request",
                    "ann_received_reply_request",
                ),
                ("Packet sent drops", "send_drops"),
                ("Packet Recv drops", "recv_drops"),
                ("Total bytes sent", "bytes_sent"),
                ("Total bytes recv", "bytes_received"),
            ] {
                let _ = writeln!(out, "\t\t\t{label}: {}", s(&p["counters"][key]));
            }
            // GKM's own: the GM database sync with this peer.
            let _ = writeln!(
                out,
                "\t\tGM sync: peer journal held to {}, ours acknowledged to {}",
                s(&p["gm_sync_held"]),
                s(&p["gm_sync_acked"])
            );
        }
        out.push('\n');
    }
    out
}

/// `show crypto gkm ks policy`.
pub fn ks_policy(groups: &[Value], statuses: &[Value]) -> String {
    let mut out = String::from("Key Server Policy:\n");
    for (g, st) in groups.iter().zip(statuses) {
        let k = &st["kek"];
        let _ = writeln!(
            out,
            "For group {} (handle: {}):\n",
            s(&g["name"]),
            s(&g["group_id"])
        );
        let _ = writeln!(
            out,
            "  # of teks : {}  Seq num : {}",
            s(&k["teks"]),
            s(&k["seq"])
        );
        let _ = writeln!(
            out,
            "  KEK POLICY (transport type : {})",
            s(&k["transport"])
        );
        let _ = writeln!(out, "    spi : 0x{}", s(&k["spi"]).to_uppercase());
        let _ = writeln!(
            out,
            "    management alg     : {:<14}encrypt alg       : {}",
            s(&k["management_algorithm"]),
            s(&k["encryption_algorithm"])
        );
        let key_octets = k["key_size_bits"]
            .as_u64()
            .map_or("-".into(), |b| (b / 8).to_string());
        let _ = writeln!(
            out,
            "    crypto iv length   : {:<14}key size          : {}",
            s(&k["iv_len"]),
            key_octets
        );
        let _ = writeln!(
            out,
            "    orig life(sec)     : {:<14}remaining life(sec): {}",
            s(&k["original_lifetime_secs"]),
            s(&k["remaining_lifetime_secs"])
        );
        let _ = writeln!(
            out,
            "    time to rekey (sec): {}",
            s(&k["time_to_rekey_secs"])
        );
        let _ = writeln!(
            out,
            "    sig hash algorithm : {:<14}sig key length    : {}",
            s(&k["sig_hash_algorithm"]),
            s(&k["sig_key_bits"])
        );
        let _ = writeln!(out, "    sig size           : {}", s(&k["sig_size"]));
        let _ = writeln!(out, "    sig key name       : {}", s(&k["sig_key_name"]));
        let _ = writeln!(
            out,
            "    acknowledgement    : {}\n",
            s(&k["acknowledgement"])
        );
    }
    out
}

/// `show crypto gkm ks replay` (seed section 1, KS side).
pub fn ks_replay(groups: &[Value]) -> String {
    let mut out = String::new();
    for g in groups {
        let _ = writeln!(out, "Anti-replay Information For Group {}:", s(&g["name"]));
        let w = &g["policy"]["d3p_window"];
        let msec = w["msec"]
            .as_u64()
            .or_else(|| w["sec"].as_u64().map(|x| x * 1000));
        match msec {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "IP-D3P: Type = POSIX-TIME-MSEC, Window-size = {m} msec\n"
                );
            }
            None => {
                let _ = writeln!(out, "IP-D3P: disabled\n");
            }
        }
    }
    out
}

/// `show crypto gkm feature ip-d3p|gdoi-interop-ack` (docs/FEATURES.md).
pub use gkm_model::show::feature_table as feature;

/// POSIX milliseconds as `show crypto gkm gm replay` prints times:
/// seconds with two decimals.
fn posix_secs(ms: u64) -> String {
    format!("{}.{:02}", ms / 1000, (ms % 1000) / 10)
}

/// A window in ms as seconds, without trailing zeros (`10`, `0.5`).
fn window_secs(ms: u32) -> String {
    let whole = ms / 1000;
    match ms % 1000 {
        0 => whole.to_string(),
        frac => format!("{whole}.{frac:03}")
            .trim_end_matches('0')
            .to_owned(),
    }
}

/// `show crypto gkm gm replay` (seed section 1, GM side), from the agent's
/// status. Times are POSIX seconds with two decimals; `win` is in seconds.
pub fn gm_replay(groups: &[gkm_model::health::GroupReplay]) -> String {
    let mut out = String::new();
    for g in groups {
        let c = &g.counters;
        let _ = writeln!(out, "Anti-replay Information For Group {}:", g.name);
        // The seed's layout shows no window here (`--json` has it and its source).
        if g.d3p_window_ms.is_some() {
            let _ = writeln!(out, "IP-D3P:");
        } else {
            let _ = writeln!(out, "IP-D3P: disabled");
        }
        let _ = writeln!(out, "Posix-time-msec : {}", posix_secs(g.posix_time_ms));
        let _ = writeln!(
            out,
            "Input Packets : {} Output Packets : {}",
            c.input_packets, c.output_packets
        );
        let _ = writeln!(
            out,
            "Input Error Packets : {} Output Error Packets : {}",
            c.input_errors, c.output_errors
        );
        let _ = writeln!(
            out,
            "IP-D3P Error History (sampled at {}pak/min):",
            gkm_model::health::HISTORY_PER_MINUTE
        );
        for e in &c.history {
            let _ = writeln!(
                out,
                "{}: src={}; my_time={}; peer_time={}; win={}",
                posix_secs(e.my_time_ms),
                e.src,
                posix_secs(e.my_time_ms),
                posix_secs(e.peer_time_ms),
                window_secs(e.window_ms)
            );
        }
        out.push('\n');
    }
    out
}
