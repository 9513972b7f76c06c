//! The overview page: every group with its alerts, the key servers, the D3P error chart.

use askama::Template;
use axum::extract::State;
use gkm_store::model::{GmFilter, GmState, Group, RekeyTransport};

use super::key_servers::{ks_lines, KeyServerLine};
use super::page::{fmt_time, render, Dashboard, Nav, OrPage, PageResult, SignedIn};
use crate::charts;
use crate::ops::now_ms;
use crate::problem::Problem;
use crate::GroupStatus;

/// One group's line on the overview.
#[derive(Debug, Clone)]
pub struct GroupLine {
    name: String,
    group_id: u32,
    transport: &'static str,
    registered: u64,
    lagging: u64,
    removed: u64,
    last_rekey: String,
    ack_ratio: String,
    weak: bool,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub(super) struct OverviewPage {
    nav: Option<Nav>,
    alerts: Vec<String>,
    states_svg: String,
    d3p_svg: String,
    groups: Vec<GroupLine>,
    key_servers: Vec<KeyServerLine>,
}

pub(super) fn transport_of(g: &Group) -> &'static str {
    match g.policy.rekey {
        RekeyTransport::Unicast { .. } => "Unicast",
        RekeyTransport::Multicast { .. } => "Multicast",
    }
}

pub(super) async fn count(d: &Dashboard, group: u32, state: GmState) -> Result<u64, Problem> {
    Ok(d.api
        .store
        .count_gms(&GmFilter {
            group: Some(group),
            state: Some(state),
            ..GmFilter::default()
        })
        .await?)
}

/// The D3P error charts: 60 bars of 2 minutes (the last two hours).
pub(super) const D3P_BUCKET_MS: i64 = 120_000;
pub(super) const D3P_BUCKETS: usize = 60;
/// A D3P error spike: a GM reporting at least this many input D3P errors
/// within [`D3P_SPIKE_WINDOW_MS`] (a delayed path or a skewed clock).
pub const D3P_SPIKE_MIN: u64 = 10;
/// The window of [`D3P_SPIKE_MIN`].
pub const D3P_SPIKE_WINDOW_MS: i64 = 5 * 60_000;

pub(super) async fn d3p_chart(d: &Dashboard, group: Option<u32>) -> Result<String, Problem> {
    let now = now_ms();
    let since = now / D3P_BUCKET_MS * D3P_BUCKET_MS - D3P_BUCKET_MS * (D3P_BUCKETS as i64 - 1);
    let points = d.api.store.d3p_errors(group, since, D3P_BUCKET_MS).await?;
    Ok(charts::d3p_errors(&points, now, D3P_BUCKET_MS, D3P_BUCKETS))
}

/// What the overview alerts on for one group, from its live status.
pub fn group_alerts(name: &str, status: Option<&GroupStatus>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(s) = status else {
        return out;
    };
    if s.rekey.gms_at_risk > 0 {
        out.push(format!(
            "{name}: {} GM(s) one missed rekey away from removal",
            s.rekey.gms_at_risk
        ));
    }
    if let Some(k) = &s.kek {
        // The KEK is rekeyed before it expires; one this close to expiry
        // means the rekeys are not going out.
        if k.original_lifetime_secs > 0 && k.remaining_lifetime_secs * 10 < k.original_lifetime_secs
        {
            out.push(format!(
                "{name}: KEK expires in {} s (under 10 % of its lifetime left)",
                k.remaining_lifetime_secs
            ));
        }
    }
    out
}

pub(super) async fn overview(State(d): State<Dashboard>, s: SignedIn) -> PageResult {
    let page = overview_page(&d, &s).await.or_page(s.nav())?;
    Ok(render(&page))
}

pub(super) async fn overview_page(d: &Dashboard, s: &SignedIn) -> Result<OverviewPage, Problem> {
    let mut groups = Vec::new();
    let mut alerts = Vec::new();
    let (mut reg, mut lag, mut rem) = (0, 0, 0);
    let all = d.api.store.groups().await?;
    for spike in d
        .api
        .store
        .d3p_spikes(now_ms() - D3P_SPIKE_WINDOW_MS, D3P_SPIKE_MIN, 20)
        .await?
    {
        let name = all
            .iter()
            .find(|g| g.group_id == spike.group)
            .map_or_else(|| spike.group.to_string(), |g| g.name.clone());
        alerts.push(format!(
            "{name}: GM {} reported {} IP-D3P input errors in the last {} min (delayed path or skewed clock?)",
            spike.gm_identity,
            spike.input_errors,
            D3P_SPIKE_WINDOW_MS / 60_000
        ));
    }
    for g in all {
        let registered = count(d, g.group_id, GmState::Registered).await?;
        let lagging = count(d, g.group_id, GmState::Lagging).await?;
        let removed = count(d, g.group_id, GmState::Removed).await?;
        reg += registered;
        lag += lagging;
        rem += removed;
        let last = d.api.store.rekeys(g.group_id, 1).await?;
        let (last_rekey, ack_ratio) = match last.first() {
            Some(r) => (
                format!("SEQ {} at {}", r.seq, fmt_time(r.started_at)),
                if r.sent == 0 {
                    "-".to_owned()
                } else {
                    format!(
                        "{}/{} ({} %)",
                        r.acked,
                        r.sent,
                        u64::from(r.acked) * 100 / u64::from(r.sent)
                    )
                },
            ),
            None => ("none yet".into(), "-".into()),
        };
        let status = d.api.control.status(g.group_id).await;
        alerts.extend(group_alerts(&g.name, status.as_ref()));
        if g.policy.coop.is_some() {
            if let Some(c) = d.api.control.coop(g.group_id).await {
                alerts.extend(c.mismatches.iter().map(|m| format!("{}: {m}", g.name)));
            }
        }
        groups.push(GroupLine {
            transport: transport_of(&g),
            weak: g.policy.legacy_phase1,
            name: g.name,
            group_id: g.group_id,
            registered,
            lagging,
            removed,
            last_rekey,
            ack_ratio,
        });
    }
    Ok(OverviewPage {
        nav: s.nav(),
        alerts,
        states_svg: charts::gm_states(reg, lag, rem),
        d3p_svg: d3p_chart(d, None).await?,
        groups,
        key_servers: ks_lines(d.api.store.key_servers().await?),
    })
}
