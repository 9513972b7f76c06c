//! The key servers page.

use askama::Template;
use axum::extract::State;
use gkm_store::model::PeerKeyServer;

use super::page::{render, Dashboard, Nav, OrPage, PageResult, SignedIn};
use crate::CoopView;

#[derive(Template)]
#[template(path = "key_servers.html")]
pub(super) struct KeyServersPage {
    nav: Option<Nav>,
    key_servers: Vec<KeyServerLine>,
    /// Each group with cooperative key servers: its name and this key
    /// server's view (None: the engine runs no COOP for it).
    coop: Vec<(String, Option<CoopView>)>,
}

/// A key server as shown.
#[derive(Debug, Clone)]
pub struct KeyServerLine {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) priority: u8,
    pub(super) role: String,
}

pub(super) fn ks_lines(v: Vec<PeerKeyServer>) -> Vec<KeyServerLine> {
    v.into_iter()
        .map(|k| KeyServerLine {
            name: k.name,
            address: k.address.to_string(),
            priority: k.priority,
            role: format!("{:?}", k.role).to_lowercase(),
        })
        .collect()
}

pub(super) async fn key_servers(State(d): State<Dashboard>, s: SignedIn) -> PageResult {
    let v = d.api.store.key_servers().await.or_page(s.nav())?;
    let mut coop = Vec::new();
    for g in d.api.store.groups().await.or_page(s.nav())? {
        if g.policy.coop.is_some() {
            coop.push((g.name, d.api.control.coop(g.group_id).await));
        }
    }
    Ok(render(&KeyServersPage {
        nav: s.nav(),
        key_servers: ks_lines(v),
        coop,
    }))
}
