//! Durable state of the mock in SQLite (`STATE_DIR/aiod-mock.sqlite3`):
//! assets, platforms, asset types, clients and credentials hand-offs.
//!
//! The in-memory catalogue serves reads. Every write goes to SQLite first,
//! in its own transaction with `synchronous=FULL`, and only then to memory,
//! so a write that got a 200 response survives a `kill -9` right after
//! the response.

use std::path::Path;

use anyhow::Context as _;
use chrono::NaiveDateTime;
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::auth::Client;
use crate::credentials::HandOff;
use crate::store::{Asset, Catalogue, Platform, Status};

pub const DATABASE_FILE: &str = "aiod-mock.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS assets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL UNIQUE,
    fields TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    modified TEXT NOT NULL,
    deleted TEXT
);
CREATE TABLE IF NOT EXISTS platforms (
    identifier INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS asset_types (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS clients (
    id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    roles TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    asset_identifier TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    encapsulated_key BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    received_at TEXT NOT NULL
);
";

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f";

/// An open state database.
#[derive(Debug)]
pub struct Database {
    connection: Connection,
}

impl Database {
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(DATABASE_FILE);
        let connection = Connection::open(&path).with_context(|| format!("failed to open {}", path.display()))?;
        // WAL lets reads proceed during a write; FULL syncs the WAL on every
        // commit, which is what makes a write durable before its response.
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .context("failed to configure the state database")?;
        connection.execute_batch(SCHEMA).context("failed to create the state tables")?;
        Ok(Self { connection })
    }

    /// Loads the stored catalogue; platforms missing from the database (the
    /// built-in ones on first start) are stored.
    pub fn load_catalogue(&mut self, seed: Catalogue) -> anyhow::Result<Catalogue> {
        let mut catalogue = seed;
        for platform in &catalogue.platforms {
            self.connection
                .execute(
                    "INSERT OR IGNORE INTO platforms (identifier, name) VALUES (?1, ?2)",
                    params![platform.identifier as i64, platform.name],
                )
                .context("failed to store a platform")?;
        }

        let mut statement = self
            .connection
            .prepare("SELECT identifier, name FROM platforms ORDER BY identifier")
            .context("failed to read platforms")?;
        catalogue.platforms = statement
            .query_map([], |row| Ok(Platform { identifier: row.get::<_, i64>(0)? as u64, name: row.get(1)? }))?
            .collect::<Result<_, _>>()
            .context("failed to read platforms")?;

        let mut statement =
            self.connection.prepare("SELECT name FROM asset_types").context("failed to read asset types")?;
        catalogue.types = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;

        let mut statement = self
            .connection
            .prepare("SELECT identifier, fields, owner, status, created, modified, deleted FROM assets ORDER BY seq")
            .context("failed to read assets")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<String>>(6)?,
            ))
        })?;
        catalogue.assets.clear();
        for row in rows {
            let (identifier, fields, owner, status, created, modified, deleted) =
                row.context("failed to read an asset")?;
            let fields =
                serde_json::from_str(&fields).with_context(|| format!("asset {identifier} has invalid fields"))?;
            catalogue.assets.push(Asset {
                fields,
                owner,
                status: parse_status(&status).with_context(|| format!("asset {identifier} has status `{status}`"))?,
                created: parse_time(&created)?,
                modified: parse_time(&modified)?,
                deleted: deleted.as_deref().map(parse_time).transpose()?,
                identifier,
            });
        }

        let mut statement = self
            .connection
            .prepare(&format!("{SELECT_HAND_OFF} ORDER BY asset_identifier"))
            .context("failed to read credentials hand-offs")?;
        catalogue.hand_offs = statement
            .query_map([], hand_off_from_row)?
            .map(|row| row.map(|hand_off| (hand_off.asset_identifier.clone(), hand_off)))
            .collect::<Result<_, _>>()
            .context("failed to read credentials hand-offs")?;
        Ok(catalogue)
    }

    /// Stores command-line clients and returns every stored client; a
    /// command-line client replaces a stored one with the same id.
    pub fn merge_clients(&mut self, clients: &[Client]) -> anyhow::Result<Vec<Client>> {
        for client in clients {
            self.connection
                .execute(
                    "INSERT INTO clients (id, secret, roles) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET secret = excluded.secret, roles = excluded.roles",
                    params![client.id, client.secret, client.roles.join(",")],
                )
                .context("failed to store a client")?;
        }
        let mut statement = self.connection.prepare("SELECT id, secret, roles FROM clients ORDER BY id")?;
        let stored = statement
            .query_map([], |row| {
                let roles: String = row.get(2)?;
                Ok(Client {
                    id: row.get(0)?,
                    secret: row.get(1)?,
                    roles: roles.split(',').filter(|role| !role.is_empty()).map(str::to_owned).collect(),
                })
            })?
            .collect::<Result<_, _>>()
            .context("failed to read clients")?;
        Ok(stored)
    }

    /// Inserts or replaces an asset, and records its type. Deleting an asset
    /// also deletes its credentials hand-off.
    pub fn save_asset(&mut self, asset: &Asset) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "INSERT INTO assets (identifier, fields, owner, status, created, modified, deleted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(identifier) DO UPDATE SET fields = excluded.fields, owner = excluded.owner,
                 status = excluded.status, modified = excluded.modified, deleted = excluded.deleted",
            params![
                asset.identifier,
                serde_json::to_string(&asset.fields)?,
                asset.owner,
                asset.status.as_str(),
                format_time(asset.created),
                format_time(asset.modified),
                asset.deleted.map(format_time),
            ],
        )?;
        if let Some(kind) = asset.fields.get("type").and_then(serde_json::Value::as_str) {
            transaction.execute("INSERT OR IGNORE INTO asset_types (name) VALUES (?1)", params![kind])?;
        }
        if asset.deleted.is_some() {
            transaction.execute("DELETE FROM credentials WHERE asset_identifier = ?1", params![asset.identifier])?;
        }
        transaction.commit().context("failed to commit an asset")
    }

    pub fn save_platform(&mut self, platform: &Platform) -> anyhow::Result<()> {
        self.connection
            .execute(
                "INSERT INTO platforms (identifier, name) VALUES (?1, ?2)
                 ON CONFLICT(identifier) DO UPDATE SET name = excluded.name",
                params![platform.identifier as i64, platform.name],
            )
            .context("failed to store a platform")?;
        Ok(())
    }

    pub fn delete_platform(&mut self, identifier: u64) -> anyhow::Result<()> {
        self.connection
            .execute("DELETE FROM platforms WHERE identifier = ?1", params![identifier as i64])
            .context("failed to delete a platform")?;
        Ok(())
    }

    /// Inserts a credentials hand-off, replacing an earlier one for the same asset.
    pub fn save_hand_off(&mut self, hand_off: &HandOff) -> anyhow::Result<()> {
        self.connection
            .execute(
                "INSERT INTO credentials (asset_identifier, key_id, encapsulated_key, ciphertext, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(asset_identifier) DO UPDATE SET key_id = excluded.key_id,
                     encapsulated_key = excluded.encapsulated_key, ciphertext = excluded.ciphertext,
                     received_at = excluded.received_at",
                params![
                    hand_off.asset_identifier,
                    hand_off.key_id,
                    hand_off.encapsulated_key,
                    hand_off.ciphertext,
                    hand_off.received_at,
                ],
            )
            .context("failed to store a credentials hand-off")?;
        Ok(())
    }

    pub fn load_hand_off(&mut self, asset_identifier: &str) -> anyhow::Result<Option<HandOff>> {
        self.connection
            .query_row(
                &format!("{SELECT_HAND_OFF} WHERE asset_identifier = ?1"),
                params![asset_identifier],
                hand_off_from_row,
            )
            .optional()
            .context("failed to read a credentials hand-off")
    }

    /// Counts the hand-offs sealed to a key other than `key_id`.
    pub fn count_hand_offs_not_sealed_to(&mut self, key_id: &str) -> anyhow::Result<u64> {
        let count: i64 = self
            .connection
            .query_row("SELECT COUNT(*) FROM credentials WHERE key_id != ?1", params![key_id], |row| row.get(0))
            .context("failed to count credentials hand-offs")?;
        Ok(count.max(0) as u64)
    }
}

const SELECT_HAND_OFF: &str =
    "SELECT asset_identifier, key_id, encapsulated_key, ciphertext, received_at FROM credentials";

fn hand_off_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<HandOff> {
    Ok(HandOff {
        asset_identifier: row.get(0)?,
        key_id: row.get(1)?,
        encapsulated_key: row.get(2)?,
        ciphertext: row.get(3)?,
        received_at: row.get(4)?,
    })
}

fn format_time(time: NaiveDateTime) -> String {
    time.format(TIME_FORMAT).to_string()
}

fn parse_time(text: &str) -> anyhow::Result<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, TIME_FORMAT).with_context(|| format!("invalid stored time `{text}`"))
}

fn parse_status(text: &str) -> Option<Status> {
    match text {
        "draft" => Some(Status::Draft),
        "submitted" => Some(Status::Submitted),
        "published" => Some(Status::Published),
        "rejected" => Some(Status::Rejected),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn assets_and_platforms_survive_reopen() {
        let dir = tempfile::tempdir().expect("state directory");
        let time = chrono::Utc::now().naive_utc();
        let asset = Asset {
            identifier: "comp_abcdefghijklmnopqrstuvwx".to_owned(),
            fields: json!({"name": "x", "type": "compute node"}).as_object().cloned().unwrap_or_default(),
            owner: "agent".to_owned(),
            status: Status::Published,
            created: time,
            modified: time,
            deleted: None,
        };
        {
            let mut database = Database::open(dir.path()).expect("open");
            database.load_catalogue(Catalogue::default()).expect("seed");
            database.save_asset(&asset).expect("save asset");
            database.save_platform(&Platform { identifier: 42, name: "lab".to_owned() }).expect("save platform");
        }

        let mut database = Database::open(dir.path()).expect("reopen");
        let catalogue = database.load_catalogue(Catalogue::default()).expect("load");
        assert_eq!(catalogue.assets.len(), 1);
        assert_eq!(catalogue.assets[0].identifier, asset.identifier);
        assert_eq!(catalogue.assets[0].created, asset.created);
        assert!(catalogue.platform_exists("lab"));
        assert!(catalogue.types.contains("compute node"));
    }

    #[test]
    fn hand_offs_replace_and_go_with_their_asset() {
        let dir = tempfile::tempdir().expect("state directory");
        let time = chrono::Utc::now().naive_utc();
        let mut asset = Asset {
            identifier: "comp_abcdefghijklmnopqrstuvwx".to_owned(),
            fields: serde_json::Map::new(),
            owner: "agent".to_owned(),
            status: Status::Published,
            created: time,
            modified: time,
            deleted: None,
        };
        let first = HandOff {
            asset_identifier: asset.identifier.clone(),
            key_id: "0123456789abcdef".to_owned(),
            encapsulated_key: vec![1; 32],
            ciphertext: vec![2; 40],
            received_at: "2026-01-02T03:04:05.000Z".to_owned(),
        };
        let second = HandOff { ciphertext: vec![3; 50], ..first.clone() };
        {
            let mut database = Database::open(dir.path()).expect("open");
            database.save_asset(&asset).expect("save asset");
            database.save_hand_off(&first).expect("save hand-off");
            database.save_hand_off(&second).expect("replace hand-off");
        }

        let mut database = Database::open(dir.path()).expect("reopen");
        assert_eq!(database.load_hand_off(&asset.identifier).expect("load"), Some(second.clone()));
        let catalogue = database.load_catalogue(Catalogue::default()).expect("load catalogue");
        assert_eq!(catalogue.hand_offs.get(&asset.identifier), Some(&second));
        assert_eq!(database.count_hand_offs_not_sealed_to("0123456789abcdef").expect("count"), 0);
        assert_eq!(database.count_hand_offs_not_sealed_to("fedcba9876543210").expect("count"), 1);

        asset.deleted = Some(time);
        database.save_asset(&asset).expect("delete asset");
        assert_eq!(database.load_hand_off(&asset.identifier).expect("load"), None);
    }

    #[test]
    fn clients_merge_by_id() {
        let dir = tempfile::tempdir().expect("state directory");
        let mut database = Database::open(dir.path()).expect("open");
        let first: Client = "agent:old:platform_lab".parse().expect("client");
        let second: Client = "agent:new:".parse().expect("client");
        database.merge_clients(&[first]).expect("merge");
        let stored = database.merge_clients(&[second]).expect("merge");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].secret, "new");
        assert!(stored[0].roles.is_empty());
    }
}
