//! The group page: its policy (view and edit), GMs (filtered, paged), rekeys, and the rekey confirmation.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use gkm_store::model::{feature_bit, GmFilter, GmRow, GmState, Group, Page, RekeyTransport, Role};
use serde::Deserialize;

use super::login::CsrfForm;
use super::overview::{d3p_chart, transport_of};
use super::page::{
    fmt_time, render, ConfirmPage, Dashboard, Nav, OrPage, PageError, PageResult, SignedIn,
    GM_PAGE, REKEY_HISTORY,
};
use crate::charts;
use crate::forms::{FieldErrors, PolicyForm};
use crate::ops::{self};
use crate::problem::Problem;
use crate::{can_mutate, GroupStatus};

/// A GM as a table row.
#[derive(Debug, Clone)]
pub struct GmLine {
    pub(super) gm_identity: String,
    pub(super) address: String,
    pub(super) class: String,
    pub(super) version: String,
    pub(super) state: &'static str,
    pub(super) seq_sent: String,
    pub(super) seq_acked: String,
    pub(super) misses: u32,
    pub(super) registered: String,
    pub(super) sids: String,
}

pub(super) fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

impl From<GmRow> for GmLine {
    fn from(m: GmRow) -> Self {
        Self {
            gm_identity: m.gm_identity,
            address: m.address,
            class: m.class,
            version: m.version.unwrap_or_else(|| "-".into()),
            state: m.state.as_str(),
            seq_sent: opt(m.last_seq_sent),
            seq_acked: opt(m.last_seq_acked),
            misses: m.misses,
            registered: fmt_time(m.registered_at),
            sids: if m.sids.is_empty() {
                "-".into()
            } else {
                m.sids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }
    }
}

/// A rekey as a table row.
#[derive(Debug, Clone)]
pub struct RekeyLine {
    seq: u32,
    reason: String,
    started: String,
    sent: u32,
    acked: u32,
    duration: String,
}

/// The group page's GM filters and cursor.
#[derive(Debug, Default, Deserialize)]
pub struct GmQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    lacking: String,
    #[serde(default)]
    after: String,
}

#[derive(Template)]
#[template(path = "group.html")]
pub(super) struct GroupPage {
    nav: Option<Nav>,
    csrf: String,
    name: String,
    group_id: u32,
    transport: &'static str,
    unicast: bool,
    d3p_shown: String,
    ack_shown: &'static str,
    weak_algorithms: Vec<String>,
    teks: Vec<String>,
    coop: Option<CoopLines>,
    status: Option<GroupStatus>,
    can_mutate: bool,
    form: PolicyForm,
    errors: FieldErrors,
    saved: Option<String>,
    chart: String,
    d3p_chart: String,
    rekeys: Vec<RekeyLine>,
    gm_total: u64,
    gms: Vec<GmLine>,
    next: Option<String>,
    filter_state: String,
    filter_class: String,
    filter_lacking: String,
}

/// The group's cooperative key server configuration as the group page
/// shows it (the vendor's `show ... ks coop` words).
pub(super) struct CoopLines {
    priority: u32,
    refresh_secs: u32,
    check_secs: u32,
    dead_periods: u32,
    /// Address, identity (or `-`), authentication (`PSK set`, `PSK not
    /// set`, `certificate`).
    peers: Vec<(String, String, &'static str)>,
}

impl CoopLines {
    fn of(c: &gkm_store::model::CoopPolicy, with_psk: &[String]) -> Self {
        Self {
            priority: c.priority,
            refresh_secs: c.refresh_secs,
            check_secs: c.check_secs,
            dead_periods: c.dead_periods,
            peers: c
                .peers
                .iter()
                .map(|p| {
                    let canonical = p
                        .ip("")
                        .map_or_else(|_| p.address.clone(), |a| a.to_string());
                    let auth = match p.authentication {
                        gkm_store::model::Authentication::Pki => "certificate",
                        _ if with_psk.contains(&canonical) => "PSK set",
                        _ => "PSK not set",
                    };
                    (
                        canonical,
                        p.identity.clone().unwrap_or_else(|| "-".into()),
                        auth,
                    )
                })
                .collect(),
        }
    }
}

/// What a path segment or query value keeps as is (RFC 3986 unreserved).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` percent-encoded for a path segment or a query value.
pub(super) fn query_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

pub(super) async fn group_page_of(
    d: &Dashboard,
    s: &SignedIn,
    g: Group,
    q: &GmQuery,
    form: Option<PolicyForm>,
    errors: FieldErrors,
    saved: Option<String>,
) -> Result<GroupPage, Problem> {
    let state = match q.state.as_str() {
        "" => None,
        w => Some(
            GmState::parse(w)
                .ok_or_else(|| ops::invalid("/state", "use registered, lagging or removed"))?,
        ),
    };
    let class = match q.class.as_str() {
        "" => None,
        c if ["cisco", "asr9000", "non-cisco"].contains(&c) => Some(c.to_owned()),
        _ => return Err(ops::invalid("/class", "use cisco, asr9000 or non-cisco")),
    };
    let feature = match q.lacking.as_str() {
        "" => None,
        f => Some((
            feature_bit(f).ok_or_else(|| ops::invalid("/lacking", "unknown feature"))?,
            false,
        )),
    };
    let filter = GmFilter {
        group: Some(g.group_id),
        gm_identity: None,
        state,
        class,
        feature,
    };
    let page = d
        .api
        .store
        .gms(
            &filter,
            &Page {
                after: (!q.after.is_empty()).then(|| (g.group_id, q.after.clone())),
                limit: GM_PAGE,
            },
        )
        .await?;
    let gm_total = d.api.store.count_gms(&filter).await?;
    let next = page.next.map(|(_, id)| {
        format!(
            "/groups/{}?state={}&class={}&lacking={}&after={}",
            query_escape(&g.name),
            query_escape(&q.state),
            query_escape(&q.class),
            query_escape(&q.lacking),
            query_escape(&id)
        )
    });
    let rekeys = d.api.store.rekeys(g.group_id, REKEY_HISTORY).await?;
    let status = d.api.control.status(g.group_id).await;
    let coop = match &g.policy.coop {
        Some(c) => Some(CoopLines::of(
            c,
            &d.api.store.coop_peers_with_psk(&g.name).await?,
        )),
        None => None,
    };
    let d3p_shown = match g.policy.d3p_window {
        None => "disabled".to_owned(),
        Some(w) => format!("Type = POSIX-TIME-MSEC, Window-size = {} msec", w.as_msec()),
    };
    Ok(GroupPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        name: g.name.clone(),
        group_id: g.group_id,
        transport: transport_of(&g),
        unicast: matches!(g.policy.rekey, RekeyTransport::Unicast { .. }),
        d3p_shown,
        ack_shown: g.policy.acknowledgement_shown(),
        weak_algorithms: g.policy.weak_algorithms(),
        teks: g
            .policy
            .teks
            .iter()
            .map(|t| format!("{} → {} {} {} s", t.src, t.dst, t.transform, t.lifetime))
            .collect(),
        coop,
        status,
        can_mutate: can_mutate(s.user.role),
        form: form.unwrap_or_else(|| PolicyForm::of(&g.policy, g.version)),
        errors,
        saved,
        chart: charts::ack_timeline(&rekeys),
        d3p_chart: d3p_chart(d, Some(g.group_id)).await?,
        rekeys: rekeys
            .into_iter()
            .map(|r| RekeyLine {
                seq: r.seq,
                reason: r.reason,
                started: fmt_time(r.started_at),
                sent: r.sent,
                acked: r.acked,
                duration: opt(r.duration_ms.map(|ms| format!("{ms} ms"))),
            })
            .collect(),
        gm_total,
        gms: page.gms.into_iter().map(GmLine::from).collect(),
        next,
        filter_state: q.state.clone(),
        filter_class: q.class.clone(),
        filter_lacking: q.lacking.clone(),
    })
}

pub(super) async fn group_page(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path(name): Path<String>,
    q: Result<Query<GmQuery>, QueryRejection>,
) -> PageResult {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return Err(PageError::query(&e, s.nav())),
    };
    let page = async {
        let g = ops::group_named(&d.api, &name).await?;
        group_page_of(&d, &s, g, &q, None, FieldErrors::new(), None).await
    }
    .await
    .or_page(s.nav())?;
    Ok(render(&page))
}

pub(super) async fn group_save(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path(name): Path<String>,
    Form(f): Form<PolicyForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return Ok(r);
    }
    let (status, page) = async {
        let g = ops::group_named(&d.api, &name).await?;
        let (errors, saved) = match f.apply(&g.policy) {
            Err(errors) => (errors, None),
            Ok((policy, version)) => {
                match ops::update_policy(&d.api, &s.user.actor(), &name, &policy, Some(version))
                    .await
                {
                    Ok((_, replace)) => {
                        let msg = if replace {
                            "Saved; a rekey replace goes to the GMs (CMD ⇄ IP-D3P)."
                        } else {
                            "Saved."
                        };
                        let g = ops::group_named(&d.api, &name).await?;
                        let page = group_page_of(
                            &d,
                            &s,
                            g,
                            &GmQuery::default(),
                            None,
                            FieldErrors::new(),
                            Some(msg.into()),
                        )
                        .await?;
                        return Ok((StatusCode::OK, page));
                    }
                    Err(p) if p.status == 409 => (
                        FieldErrors::from([(
                            "_form",
                            "the group changed since this form was loaded; reload and edit again"
                                .to_owned(),
                        )]),
                        None,
                    ),
                    Err(p) if p.status == 422 => (
                        FieldErrors::from([(
                            crate::forms::field_of_path(p.field.as_deref().unwrap_or("")),
                            p.detail.clone(),
                        )]),
                        None,
                    ),
                    Err(p) => return Err(p),
                }
            }
        };
        let page = group_page_of(
            &d,
            &s,
            g,
            &GmQuery::default(),
            Some(f.clone()),
            errors,
            saved,
        )
        .await?;
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page))
    }
    .await
    .or_page(s.nav())?;
    let mut resp = render(&page);
    *resp.status_mut() = status;
    Ok(resp)
}

/// `?replace=1` on the rekey confirmation.
#[derive(Debug, Default, Deserialize)]
pub struct ReplaceQuery {
    #[serde(default)]
    replace: Option<String>,
}

pub(super) async fn rekey_confirm(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path(name): Path<String>,
    q: Result<Query<ReplaceQuery>, QueryRejection>,
) -> PageResult {
    if s.user.role < Role::Operator {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            s.nav(),
            "rekeys need the operator role",
        ));
    }
    ops::group_named(&d.api, &name).await.or_page(s.nav())?;
    let replace = match q {
        Ok(Query(q)) => q.replace.is_some(),
        Err(e) => return Err(PageError::query(&e, s.nav())),
    };
    Ok(render(&ConfirmPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        title: if replace {
            "Rekey replace"
        } else {
            "Rekey now"
        }
        .into(),
        message: if replace {
            format!("Send group {name} new TEKs and KEK that replace the current ones at once (every GM must take them)?")
        } else {
            format!("Send group {name} a rekey now?")
        },
        action: format!("/groups/{}/rekey", query_escape(&name)),
        back: format!("/groups/{}", query_escape(&name)),
        replace,
    }))
}

pub(super) async fn rekey_do(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return Ok(r);
    }
    ops::rekey(&d.api, &s.user.actor(), &name, f.replace.is_some())
        .await
        .or_page(s.nav())?;
    Ok(Redirect::to(&format!("/groups/{}", query_escape(&name))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_escaping() {
        assert_eq!(query_escape("a b/c"), "a%20b%2Fc");
        assert_eq!(query_escape("10.0.0.1"), "10.0.0.1");
    }
}
