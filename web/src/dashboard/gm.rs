//! The GM page: one GM's registration and health report, and its ejection.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use gkm_store::model::{
    GmFilter, GmHealth, GmRow, Group, Membership, Page, Role, WindowSource, FEATURES,
};

use super::group::{query_escape, GmLine};
use super::login::CsrfForm;
use super::page::{
    fmt_time, render, ConfirmPage, Dashboard, Nav, OrPage, PageError, PageResult, SignedIn,
};
use crate::can_mutate;
use crate::ops::{self};
use crate::problem::Problem;

#[derive(Template)]
#[template(path = "gm.html")]
pub(super) struct GmPage {
    nav: Option<Nav>,
    group: String,
    gm: GmLine,
    features: Vec<(&'static str, &'static str)>,
    can_mutate: bool,
    health: Option<HealthView>,
}

/// A GM's latest health report as the GM page shows it (the seed's
/// `show crypto gkm gm replay` data).
pub(super) struct HealthView {
    received: String,
    agent_version: String,
    registered: &'static str,
    window: String,
    clock_skew: String,
    input_packets: u64,
    output_packets: u64,
    input_errors: u64,
    output_errors: u64,
    /// src, my_time, peer_time, difference, window.
    history: Vec<(String, String, String, String, String)>,
    /// The controller's finding: an ACK the agent sent never arrived.
    ack_lost: Option<String>,
    /// Membership and ACK health (label, value), agents of GKM 0.2 on.
    membership: Vec<(&'static str, String)>,
    /// Bytes in, bytes out, ESP receive-queue drops.
    traffic: Option<(u64, u64, u64)>,
}

/// The membership rows of a report.
fn membership_rows(m: &Membership) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let seq = |v: Option<u32>| opt(v.map(|s| s.to_string()));
    let r = &m.pushes_refused;
    vec![
        ("Key server", opt(m.key_server.clone())),
        ("KEK SPI", opt(m.kek_spi.clone())),
        ("Last SEQ received", seq(m.last_seq_received)),
        ("Last SEQ accepted", seq(m.last_seq_accepted)),
        (
            "Last SEQ acknowledged",
            match (m.last_seq_acked, m.ack_kind) {
                (Some(s), Some(k)) => format!("{s} ({} ACK)", k.as_str()),
                (s, _) => seq(s),
            },
        ),
        (
            "Pushes refused",
            format!(
                "malformed {}, wrong KEK {}, bad signature {}, replayed {}, before registration {}",
                r.malformed, r.wrong_kek, r.bad_signature, r.replayed, r.unregistered
            ),
        ),
        ("Registrations", m.registrations.to_string()),
        ("Fail-overs", m.failovers.to_string()),
    ]
}

impl From<GmHealth> for HealthView {
    fn from(h: GmHealth) -> Self {
        let ack_lost = h.ack_lost.then(|| {
            let seq = h.membership.as_ref().and_then(|m| m.last_seq_acked);
            format!(
                "ACK lost on the way: the agent acknowledged SEQ {}, the key server never received it and counts a missed rekey (an asymmetric path or a filter drops this GM's ACKs).",
                seq.map_or_else(|| "-".into(), |s| s.to_string())
            )
        });
        let membership = h
            .membership
            .as_ref()
            .map(membership_rows)
            .unwrap_or_default();
        let traffic = h
            .traffic
            .map(|t| (t.bytes_in, t.bytes_out, t.esp_rx_queue_drops));
        let c = h.counters;
        let signed = |ms: i128| format!("{ms:+} ms");
        Self {
            received: fmt_time(h.received_at),
            agent_version: h.agent_version,
            registered: if h.registered { "yes" } else { "no" },
            window: match (h.d3p_window_ms, h.d3p_window_source) {
                (None, _) => "IP-D3P off".into(),
                (Some(w), Some(WindowSource::Client)) => format!("{w} ms (client d3p window)"),
                (Some(w), _) => format!("{w} ms (from the key server)"),
            },
            clock_skew: signed(i128::from(h.agent_time_ms) - i128::from(h.received_at)),
            input_packets: c.input_packets,
            output_packets: c.output_packets,
            input_errors: c.input_errors,
            output_errors: c.output_errors,
            history: c
                .history
                .iter()
                .rev()
                .map(|e| {
                    (
                        e.src.to_string(),
                        e.my_time_ms.to_string(),
                        e.peer_time_ms.to_string(),
                        signed(i128::from(e.my_time_ms) - i128::from(e.peer_time_ms)),
                        format!("{} ms", e.window_ms),
                    )
                })
                .collect(),
            ack_lost,
            membership,
            traffic,
        }
    }
}

pub(super) async fn gm_row(
    d: &Dashboard,
    name: &str,
    gm_identity: &str,
) -> Result<(Group, GmRow), Problem> {
    let g = ops::group_named(&d.api, name).await?;
    let page = d
        .api
        .store
        .gms(
            &GmFilter {
                group: Some(g.group_id),
                gm_identity: Some(gm_identity.to_owned()),
                ..GmFilter::default()
            },
            &Page {
                after: None,
                limit: 1,
            },
        )
        .await?;
    let m = page
        .gms
        .into_iter()
        .next()
        .ok_or_else(|| Problem::not_found(format!("GM {gm_identity:?} in group {name:?}")))?;
    Ok((g, m))
}

pub(super) async fn gm_page(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path((name, gm_identity)): Path<(String, String)>,
) -> PageResult {
    let (g, m) = gm_row(&d, &name, &gm_identity).await.or_page(s.nav())?;
    let features = FEATURES
        .iter()
        .map(|(n, b)| (*n, if m.features & b != 0 { "Yes" } else { "No" }))
        .collect();
    let health = d
        .api
        .store
        .gm_health(g.group_id, &m.gm_identity)
        .await
        .or_page(s.nav())?
        .map(HealthView::from);
    Ok(render(&GmPage {
        nav: s.nav(),
        group: g.name,
        gm: GmLine::from(m),
        features,
        can_mutate: can_mutate(s.user.role),
        health,
    }))
}

pub(super) async fn eject_confirm(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path((name, gm_identity)): Path<(String, String)>,
) -> PageResult {
    if s.user.role < Role::Operator {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            s.nav(),
            "ejecting needs the operator role",
        ));
    }
    gm_row(&d, &name, &gm_identity).await.or_page(s.nav())?;
    let base = format!(
        "/groups/{}/gms/{}",
        query_escape(&name),
        query_escape(&gm_identity)
    );
    Ok(render(&ConfirmPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        title: "Eject GM".into(),
        message: format!(
            "Remove {gm_identity} from group {name}? It gets no more rekeys and loses the group's traffic when its keys expire, unless it registers again."
        ),
        action: format!("{base}/eject"),
        back: base,
        replace: false,
    }))
}

pub(super) async fn eject_do(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path((name, gm_identity)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return Ok(r);
    }
    ops::eject(&d.api, &s.user.actor(), &name, &gm_identity)
        .await
        .or_page(s.nav())?;
    Ok(Redirect::to(&format!("/groups/{}", query_escape(&name))).into_response())
}
