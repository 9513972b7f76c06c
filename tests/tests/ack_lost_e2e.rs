//! "ACK lost on the way", end to end: a real key server, a real agent in
//! its own network namespace reporting its membership, and a real filter
//! (tc, on the GM's side of the link) dropping the GM's unicast ACKs
//! (ISAKMP exchange type 240) to the key server, as an asymmetric path or
//! an ACL would. The key server counts the rekey missed; the agent says it
//! acknowledged it; the controller flags the GM in its health (API), on
//! the GM page and in `gkm_gms_ack_lost`. With the filter gone, the next
//! rekey's ACK arrives and the flag clears.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gkm_tests::api::{get_text, Api};
use gkm_tests::procs::{binary, free_tcp_port, free_udp_port, fresh_dir, ip, Proc};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const KS_IP: &str = "10.98.0.1";
const GM_IP: &str = "10.98.0.2";

/// The GM's namespace, joined to this one by a veth pair; gone on drop.
struct GmNet {
    ns: String,
    dev: String,
}

impl GmNet {
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let n = Self {
            ns: format!("gkmack{tag}"),
            dev: format!("agm{tag}"),
        };
        let here = format!("aks{tag}");
        ip(&["netns", "add", &n.ns]);
        ip(&["link", "add", &here, "type", "veth", "peer", "name", &n.dev]);
        ip(&["link", "set", &n.dev, "netns", &n.ns]);
        ip(&["addr", "add", &format!("{KS_IP}/30"), "dev", &here]);
        ip(&["link", "set", &here, "up"]);
        ip(&[
            "-n",
            &n.ns,
            "addr",
            "add",
            &format!("{GM_IP}/30"),
            "dev",
            &n.dev,
        ]);
        ip(&["-n", &n.ns, "link", "set", "lo", "up"]);
        ip(&["-n", &n.ns, "link", "set", &n.dev, "up"]);
        n
    }

    /// `tc` in the GM's namespace.
    fn tc(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "tc"])
            .args(args)
            .output()
            .expect("tc (iproute2)");
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops every IPv4 UDP datagram to `port` whose ISAKMP exchange type
    /// (byte 18 of the ISAKMP header: 20 + 8 + 18 = 46 from the IP header)
    /// is 240, GKM's and Cisco's unicast ACK, as it leaves the GM: a u32
    /// classifier on the link's egress redirects them into a veth pair
    /// that leads nowhere (this kernel has mirred, not gact's drop).
    fn drop_acks(&self, port: u16) {
        let sink = format!("{}s", self.dev);
        ip(&[
            "-n",
            &self.ns,
            "link",
            "add",
            &sink,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{sink}p"),
        ]);
        ip(&["-n", &self.ns, "link", "set", &sink, "up"]);
        ip(&["-n", &self.ns, "link", "set", &format!("{sink}p"), "up"]);
        self.tc(&["qdisc", "add", "dev", &self.dev, "clsact"]);
        let port = port.to_string();
        self.tc(&[
            "filter", "add", "dev", &self.dev, "egress", "protocol", "ip", "u32", "match", "ip",
            "protocol", "17", "0xff", "match", "ip", "dport", &port, "0xffff", "match", "u8",
            "240", "0xff", "at", "46", "action", "mirred", "egress", "redirect", "dev", &sink,
        ]);
    }

    fn pass_acks(&self) {
        self.tc(&["qdisc", "del", "dev", &self.dev, "clsact"]);
    }
}

impl Drop for GmNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Polls until `f` holds of the GM's health report.
fn until(admin: &Api, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, h) = admin.call(
            "GET",
            &format!("/api/v1/groups/GET/gms/{GM_IP}/health"),
            None,
        );
        if status == 200 && f(&h) {
            return h;
        }
        assert!(start.elapsed() < WAIT, "{what}: last health {status} {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rekey(admin: &Api) {
    admin.expect(
        202,
        "POST",
        "/api/v1/groups/GET/rekey",
        Some(&json!({"replace": false})),
    );
}

#[test]
fn an_ack_the_filter_drops_is_flagged_lost_on_the_way_and_clears_when_acks_pass() {
    let net = GmNet::new();
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "ack-lost");
    let (udp, http) = (free_udp_port(), free_tcp_port());
    let mut ks = Proc::spawn(
        {
            let mut c = Command::new(binary("gkm-server", "gkm-server"));
            c.args(["--listen", &format!("{KS_IP}:{udp}")])
                .args(["--http", &format!("0.0.0.0:{http}"), "--http-insecure"])
                .args(["--metrics", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(dir.join("data"))
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1");
            c
        },
        &dir.join("server.log"),
    );
    ks.wait_for("serving the REST API", Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{http}");
    let admin = Api::bootstrap_admin(&url, &dir.join("data"));
    admin.create_unicast_group("GET", 4500, "ack-lost-psk", json!({"retransmit_number": 1}));
    let token = admin.expect(
        201,
        "POST",
        "/api/v1/tokens",
        Some(&json!({"name": "gm-agent", "role": "agent",
                     "gm": {"group": 4500, "gm_identity": GM_IP}})),
    )["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_file = dir.join("agent-token");
    std::fs::write(&token_file, &token).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[report]\nurl = \"http://{KS_IP}:{http}\"\ntoken_file = \"{}\"\ninterval = 1\ninsecure_http = true\n",
            token_file.display()
        ),
    )
    .unwrap();
    let mut agent = agent(&net, &dir, &config, udp);
    agent.wait_for("registered group 4500", WAIT);

    // Reports carry the membership: the key server, the KEK, the SEQ.
    let h = until(&admin, "the first report", |h| {
        h["membership"]["key_server"] == json!(format!("{KS_IP}:{udp}"))
    });
    assert_eq!(h["membership"]["registrations"], 1, "{h}");
    assert_eq!(
        h["membership"]["kek_spi"].as_str().map(str::len),
        Some(32),
        "{h}"
    );
    assert!(h.get("ack_lost").is_none(), "{h}");

    // A rekey with the ACKs passing: acknowledged, nothing lost.
    rekey(&admin);
    ks.wait_for("rekey acknowledged by every GM", WAIT);
    let h = until(&admin, "the first ACK reported", |h| {
        h["membership"]["last_seq_acked"].is_u64()
    });
    let first = h["membership"]["last_seq_acked"].as_u64().unwrap();
    assert_eq!(h["membership"]["ack_kind"], "cisco", "{h}");
    assert!(h.get("ack_lost").is_none(), "{h}");

    // The filter drops the GM's ACKs: the agent acknowledges, the key
    // server never hears it and counts a miss.
    net.drop_acks(udp);
    rekey(&admin);
    let h = until(&admin, "ACK lost on the way", |h| h["ack_lost"] == true);
    let second = h["membership"]["last_seq_acked"].as_u64().unwrap();
    assert!(second > first, "{h}");
    let gm = admin.expect(200, "GET", "/api/v1/gms?group=4500", None);
    let row = &gm["gms"][0];
    assert!(row["misses"].as_u64().unwrap() >= 1, "{gm}");
    assert!(row["last_seq_acked"].as_u64() < Some(second), "{gm}");
    // The GM page says so; the metric counts it.
    let page = dashboard_gm_page(&url, &dir);
    assert!(page.contains("id=\"ack-lost\""), "{page}");
    assert!(
        page.contains(&format!("acknowledged SEQ {second}")),
        "{page}"
    );
    let open = ks.logged_addr("serving /metrics", "metrics");
    let (_, scrape) = get_text(&format!("http://{open}/metrics"), None);
    assert!(
        scrape.contains("gkm_gms_ack_lost{group=\"GET\"} 1"),
        "{scrape}"
    );

    // The filter goes: the next rekey's ACK arrives, the flag clears.
    net.pass_acks();
    rekey(&admin);
    until(&admin, "the flag cleared", |h| {
        h.get("ack_lost").is_none() && h["membership"]["last_seq_acked"].as_u64() > Some(second)
    });
    let (_, scrape) = get_text(&format!("http://{open}/metrics"), None);
    assert!(
        scrape.contains("gkm_gms_ack_lost{group=\"GET\"} 0"),
        "{scrape}"
    );
}

fn agent(net: &GmNet, dir: &Path, config: &Path, udp: u16) -> Proc {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &net.ns])
        .arg(binary("gkm-agent", "gkm-agent"))
        .arg("--config")
        .arg(config)
        .args(["--key-server", &format!("{KS_IP}:{udp}")])
        .args(["--group", "4500", "--psk", "ack-lost-psk"])
        .args(["--bind", &format!("{GM_IP}:0")])
        .arg("--status-socket")
        .arg(dir.join("agent.sock"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    Proc::spawn(c, &dir.join("agent.log"))
}

/// The GM page, signed in as the local admin.
fn dashboard_gm_page(url: &str, dir: &Path) -> String {
    let password = std::fs::read_to_string(dir.join("data/admin-password")).unwrap();
    gkm_tests::api::dashboard_get(
        url,
        "admin",
        password.trim(),
        &format!("/groups/GET/gms/{GM_IP}"),
    )
}
