//! Groups: their policy (JSON, the PSK never in it), version for
//! optimistic updates, and the sealed PSK beside them. Deleting a group
//! deletes its GMs, rekey history, health reports and secrets.

use gkm_model::clock::unix_ms_i64 as now_ms;
use zeroize::Zeroizing;

use super::{audit, corrupt, db, u32_of, Args, Backend, Col, Run, SqlStore};
use crate::model::{Authentication, Group, GroupPolicy};
use crate::{Actor, GroupStore, Result, SecretStore, StoreError};

const GROUP_COLUMNS: &str = "id, name, identity, policy, version, created_at, updated_at";

/// The name of a group's sealed PSK.
fn psk_secret(group: &str) -> String {
    format!("group/{group}/psk")
}

/// The policy as stored: the PSK is never in it (it is sealed apart).
fn policy_json(p: &GroupPolicy) -> Result<String> {
    serde_json::to_string(p).map_err(|e| corrupt(format!("policy: {e}")))
}

/// Where a group's sealed KS-to-KS pre-shared keys live (the peer's
/// address, in its canonical text, follows).
fn coop_psk_prefix(group: &str) -> String {
    format!("group/{group}/coop-psk/")
}

/// The name of the sealed pre-shared key of the group's peer key server at
/// `address`.
fn coop_psk_secret(group: &str, address: &str) -> String {
    let canonical = address
        .parse::<std::net::IpAddr>()
        .map_or_else(|_| address.to_owned(), |a| a.to_string());
    format!("{}{canonical}", coop_psk_prefix(group))
}

fn psk_of(p: &GroupPolicy) -> Option<&str> {
    match &p.authentication {
        Authentication::Psk { psk: Some(k) } => Some(k),
        _ => None,
    }
}

impl<DB: Backend> SqlStore<DB> {
    /// Seals the peer PSKs `policy` gives and deletes those of peers it no
    /// longer lists or that authenticate with certificates now; a peer
    /// listed with `psk` PSK but no key keeps the one it has. The change,
    /// for the audit entry (`,"coop_psk":[...]`, or nothing).
    async fn put_coop_psks(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        name: &str,
        policy: &GroupPolicy,
    ) -> Result<String> {
        let prefix = coop_psk_prefix(name);
        let kept: Vec<String> = policy
            .coop
            .iter()
            .flat_map(|c| c.peers.iter())
            .filter(|p| matches!(p.authentication, Authentication::Psk { .. }))
            .map(|p| coop_psk_secret(name, &p.address))
            .collect();
        let stored: Vec<String> =
            Self::sql("SELECT name FROM secrets WHERE substr(name, 1, CAST($1 AS INTEGER)) = $2")
                .arg(prefix.len() as i64)
                .arg(prefix.as_str())
                .all(&mut **tx)
                .await?
                .iter()
                .map(|r| r.col::<String>("name"))
                .collect::<core::result::Result<_, _>>()?;
        let mut changes = Vec::new();
        for gone in stored.iter().filter(|n| !kept.contains(n)) {
            Self::sql("DELETE FROM secrets WHERE name = $1")
                .arg(gone.as_str())
                .run(&mut **tx)
                .await?;
            changes.push(format!("\"retired {}\"", &gone[prefix.len()..]));
        }
        for (address, k) in policy.coop.iter().flat_map(|c| c.peer_psks()) {
            let secret = coop_psk_secret(name, address);
            self.put_secret_tx(tx, &secret, k.as_bytes()).await?;
            changes.push(format!("\"set {}\"", &secret[prefix.len()..]));
        }
        Ok(if changes.is_empty() {
            String::new()
        } else {
            format!(",\"coop_psk\":[{}]", changes.join(","))
        })
    }

    fn group_of(r: &DB::Row) -> Result<Group> {
        let policy: String = r.col("policy")?;
        Ok(Group {
            id: r.col("id")?,
            name: r.col("name")?,
            group_id: u32_of(r.col("identity")?, "group identity")?,
            policy: serde_json::from_str(&policy)
                .map_err(|e| corrupt(format!("group policy: {e}")))?,
            version: r.col("version")?,
            created_at: r.col("created_at")?,
            updated_at: r.col("updated_at")?,
        })
    }
}

#[async_trait::async_trait]
impl<DB: Backend> GroupStore for SqlStore<DB> {
    async fn create_group(
        &self,
        actor: &Actor,
        name: &str,
        group_id: u32,
        policy: &GroupPolicy,
    ) -> Result<Group> {
        let now = now_ms();
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let row = Self::sql(&format!(
            "INSERT INTO groups (name, identity, policy, version, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $4) RETURNING {GROUP_COLUMNS}"
        ))
        .arg(name)
        .arg(i64::from(group_id))
        .arg(policy_json(policy)?)
        .arg(now)
        .one(&mut *tx)
        .await
        .map_err(|e| db(e, &format!("a group named {name:?} or numbered {group_id}")))?;
        let group = Self::group_of(&row)?;
        if let Some(k) = psk_of(policy) {
            self.put_secret_tx(&mut tx, &psk_secret(name), k.as_bytes())
                .await?;
        }
        let coop = self.put_coop_psks(&mut tx, name, policy).await?;
        let detail = format!("{{\"group_id\":{group_id}{coop}}}");
        Self::audit_tx(&mut tx, &audit::entry(actor, "group.create", name, detail)).await?;
        tx.commit().await?;
        Ok(group)
    }

    async fn update_group(
        &self,
        actor: &Actor,
        name: &str,
        policy: &GroupPolicy,
        expected_version: Option<i64>,
    ) -> Result<Group> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let row = Self::sql(&format!(
            "UPDATE groups SET policy = $1, version = version + 1, updated_at = $2 \
             WHERE name = $3 AND ($4 IS NULL OR version = $4) RETURNING {GROUP_COLUMNS}"
        ))
        .arg(policy_json(policy)?)
        .arg(now_ms())
        .arg(name)
        .arg(expected_version)
        .optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists = Self::sql("SELECT 1 FROM groups WHERE name = $1")
                .arg(name)
                .optional(&mut *tx)
                .await?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(format!(
                    "group {name:?} changed since version {}",
                    expected_version.unwrap_or(0)
                ))
            } else {
                StoreError::NotFound(format!("group {name:?}"))
            });
        };
        let group = Self::group_of(&row)?;
        let psk = match &policy.authentication {
            Authentication::Psk { psk: Some(k) } => {
                self.put_secret_tx(&mut tx, &psk_secret(name), k.as_bytes())
                    .await?;
                ",\"psk\":\"rotated\""
            }
            Authentication::Psk { psk: None } => "",
            // Certificates now: the PSK is retired with the change.
            Authentication::Pki => {
                let gone = Self::sql("DELETE FROM secrets WHERE name = $1")
                    .arg(psk_secret(name))
                    .run(&mut *tx)
                    .await?;
                if DB::rows_affected(&gone) > 0 {
                    ",\"psk\":\"retired\""
                } else {
                    ""
                }
            }
        };
        let coop = self.put_coop_psks(&mut tx, name, policy).await?;
        let detail = format!("{{\"version\":{}{psk}{coop}}}", group.version);
        Self::audit_tx(&mut tx, &audit::entry(actor, "group.update", name, detail)).await?;
        tx.commit().await?;
        Ok(group)
    }

    async fn delete_group(&self, actor: &Actor, name: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let sql = format!(
            "SELECT id, identity FROM groups WHERE name = $1{}",
            DB::FOR_UPDATE
        );
        let Some(row) = Self::sql(&sql).arg(name).optional(&mut *tx).await? else {
            return Err(StoreError::NotFound(format!("group {name:?}")));
        };
        let id: i64 = row.col("id")?;
        let identity = u32_of(row.col("identity")?, "group identity")?;
        for table in ["gms", "rekeys", "gm_health", "d3p_errors"] {
            Self::sql(&format!("DELETE FROM {table} WHERE group_id = $1"))
                .arg(id)
                .run(&mut *tx)
                .await?;
        }
        // Every secret of the group: its PSK and its keys and SEQ.
        Self::sql("DELETE FROM secrets WHERE name = $1 OR name = $2 OR name = $3")
            .arg(psk_secret(name))
            .arg(crate::group_state_secret(identity))
            .arg(crate::coop_epoch_secret(identity))
            .run(&mut *tx)
            .await?;
        let prefix = coop_psk_prefix(name);
        Self::sql("DELETE FROM secrets WHERE substr(name, 1, CAST($1 AS INTEGER)) = $2")
            .arg(prefix.len() as i64)
            .arg(prefix.as_str())
            .run(&mut *tx)
            .await?;
        Self::sql("DELETE FROM groups WHERE id = $1")
            .arg(id)
            .run(&mut *tx)
            .await?;
        Self::audit_tx(
            &mut tx,
            &audit::entry(actor, "group.delete", name, "{}".into()),
        )
        .await?;
        tx.commit().await?;
        self.gms_changed();
        Ok(())
    }

    async fn group(&self, name: &str) -> Result<Option<Group>> {
        Self::sql(&format!(
            "SELECT {GROUP_COLUMNS} FROM groups WHERE name = $1"
        ))
        .arg(name)
        .optional(&mut *self.conn().await?)
        .await?
        .map(|r| Self::group_of(&r))
        .transpose()
    }

    async fn group_by_group_id(&self, group_id: u32) -> Result<Option<Group>> {
        Self::sql(&format!(
            "SELECT {GROUP_COLUMNS} FROM groups WHERE identity = $1"
        ))
        .arg(i64::from(group_id))
        .optional(&mut *self.conn().await?)
        .await?
        .map(|r| Self::group_of(&r))
        .transpose()
    }

    async fn groups(&self) -> Result<Vec<Group>> {
        Self::sql(&format!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY name"))
            .all(&mut *self.conn().await?)
            .await?
            .iter()
            .map(Self::group_of)
            .collect()
    }

    async fn group_psk(&self, name: &str) -> Result<Option<Zeroizing<String>>> {
        match self.secret(&psk_secret(name)).await? {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(|s| Some(Zeroizing::new(s)))
                .map_err(|_| corrupt("PSK is not UTF-8")),
        }
    }

    async fn coop_peer_psk(&self, name: &str, address: &str) -> Result<Option<Zeroizing<String>>> {
        match self.secret(&coop_psk_secret(name, address)).await? {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(|s| Some(Zeroizing::new(s)))
                .map_err(|_| corrupt("peer PSK is not UTF-8")),
        }
    }

    async fn coop_peers_with_psk(&self, name: &str) -> Result<Vec<String>> {
        let prefix = coop_psk_prefix(name);
        Self::sql("SELECT name FROM secrets WHERE substr(name, 1, CAST($1 AS INTEGER)) = $2 ORDER BY name")
            .arg(prefix.len() as i64)
            .arg(prefix.as_str())
            .all(&mut *self.conn().await?)
            .await?
            .iter()
            .map(|r| Ok(r.col::<String>("name")?[prefix.len()..].to_owned()))
            .collect()
    }

    async fn set_group_psk(&self, actor: &Actor, name: &str, psk: Option<&str>) -> Result<Group> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM groups WHERE name = $1{}",
            DB::FOR_UPDATE
        );
        let Some(row) = Self::sql(&sql).arg(name).optional(&mut *tx).await? else {
            return Err(StoreError::NotFound(format!("group {name:?}")));
        };
        let group = Self::group_of(&row)?;
        let action = match psk {
            Some(k) => {
                if group.policy.authentication == Authentication::Pki {
                    return Err(StoreError::Conflict(format!(
                        "group {name:?} authenticates GMs with certificates: set authentication to psk to give it a PSK"
                    )));
                }
                self.put_secret_tx(&mut tx, &psk_secret(name), k.as_bytes())
                    .await?;
                "group.psk.rotate"
            }
            None => {
                Self::sql("DELETE FROM secrets WHERE name = $1")
                    .arg(psk_secret(name))
                    .run(&mut *tx)
                    .await?;
                "group.psk.clear"
            }
        };
        Self::audit_tx(&mut tx, &audit::entry(actor, action, name, "{}".into())).await?;
        tx.commit().await?;
        Ok(group)
    }
}
