//! The features page: `show crypto gkm feature` per group, optionally only the devices lacking one.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use gkm_store::model::{feature_bit, GmFilter, Page};
use serde::Deserialize;

use super::page::{render, Dashboard, Nav, OrPage, PageError, PageResult, SignedIn};
use crate::problem::Problem;

/// One `show crypto gkm feature` table.
#[derive(Debug, Clone)]
pub struct FeatureTable {
    feature: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "features.html")]
pub(super) struct FeaturesPage {
    nav: Option<Nav>,
    lacking: bool,
    tables: Vec<FeatureTable>,
}

/// `?lacking=1`.
#[derive(Debug, Default, Deserialize)]
pub struct LackingQuery {
    #[serde(default)]
    lacking: Option<String>,
}

/// The seed's `show crypto gkm feature <name>` layout for one group.
pub use gkm_model::show::feature_table;

pub(super) async fn features(
    State(d): State<Dashboard>,
    s: SignedIn,
    q: Result<Query<LackingQuery>, QueryRejection>,
) -> PageResult {
    let lacking = match q {
        Ok(Query(q)) => q.lacking.is_some(),
        Err(e) => return Err(PageError::query(&e, s.nav())),
    };
    let tables = async {
        let groups = d.api.store.groups().await?;
        let mut tables = Vec::new();
        for feature in ["ip-d3p", "gdoi-interop-ack"] {
            let bit = feature_bit(feature).unwrap_or(0);
            let mut text = String::new();
            for g in &groups {
                let mut rows = Vec::new();
                let mut after = None;
                loop {
                    let page = d
                        .api
                        .store
                        .gms(
                            &GmFilter {
                                group: Some(g.group_id),
                                feature: lacking.then_some((bit, false)),
                                ..GmFilter::default()
                            },
                            &Page { after, limit: 1000 },
                        )
                        .await?;
                    rows.extend(page.gms.into_iter().map(|m| {
                        (
                            m.gm_identity,
                            m.version.unwrap_or_else(|| "-".into()),
                            m.features & bit != 0,
                        )
                    }));
                    match page.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                let key_servers: Vec<(String, String, bool)> = d
                    .api
                    .control
                    .status(g.group_id)
                    .await
                    .map(|st| st.key_servers)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|k| (k.address, k.version, k.features & bit != 0))
                    .filter(|k| !(lacking && k.2))
                    .collect();
                text.push_str(&feature_table(&g.name, &key_servers, &rows));
                text.push('\n');
            }
            tables.push(FeatureTable { feature, text });
        }
        Ok::<_, Problem>(tables)
    }
    .await
    .or_page(s.nav())?;
    Ok(render(&FeaturesPage {
        nav: s.nav(),
        lacking,
        tables,
    }))
}
