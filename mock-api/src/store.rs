//! In-memory catalogue of computational assets and platforms, with the
//! ownership and visibility rules of the real server.
//!
//! Writes go through [`Catalogue::write_asset`], [`Catalogue::write_hand_off`]
//! and the platform methods, which store them in the state database first
//! when one is attached.

use chrono::NaiveDateTime;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use crate::credentials::HandOff;
use crate::persist::Database;

/// Platforms the real catalogue ships with, in its seeding order.
pub const BUILT_IN_PLATFORMS: &[&str] =
    &["aiod", "ai4europe_cms", "example", "openml", "huggingface", "zenodo", "ai4experiments", "aibuilder"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Draft,
    Submitted,
    Published,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Submitted => "submitted",
            Status::Published => "published",
            Status::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Asset {
    pub identifier: String,
    /// The validated create fields, as last written.
    pub fields: Map<String, Value>,
    /// Client id of the creator, who may edit and see the asset as a draft.
    pub owner: String,
    pub status: Status,
    pub created: NaiveDateTime,
    pub modified: NaiveDateTime,
    pub deleted: Option<NaiveDateTime>,
}

impl Asset {
    pub fn platform(&self) -> Option<&str> {
        self.fields.get("platform").and_then(Value::as_str)
    }

    pub fn platform_resource_identifier(&self) -> Option<&str> {
        self.fields.get("platform_resource_identifier").and_then(Value::as_str)
    }

    /// Renders the `ComputationalAssetRead` form: null fields left out,
    /// empty lists kept, the three identifiers equal.
    pub fn to_read(&self) -> Value {
        let mut read = Map::new();
        for (key, value) in &self.fields {
            if !value.is_null() && key != "aiod_entry" {
                read.insert(key.clone(), value.clone());
            }
        }
        for list in [
            "alternate_name",
            "keyword",
            "relevant_link",
            "application_area",
            "industrial_sector",
            "research_area",
            "scientific_domain",
            "falls_under_paradigm",
            "contact",
            "contacts",
            "creator",
            "media",
            "note",
            "is_part_of",
            "has_part",
            "relevant_resource",
            "relevant_to",
            "distribution",
            "citation",
        ] {
            read.entry(list.to_owned()).or_insert_with(|| json!([]));
        }
        let editors =
            self.fields.get("aiod_entry").and_then(|entry| entry.get("editor")).cloned().unwrap_or_else(|| json!([]));
        read.insert(
            "aiod_entry".to_owned(),
            json!({
                "editor": editors,
                "status": self.status.as_str(),
                "date_modified": format_time(self.modified),
                "date_created": format_time(self.created),
            }),
        );
        for key in ["identifier", "ai_resource_identifier", "ai_asset_identifier"] {
            read.insert(key.to_owned(), Value::from(self.identifier.clone()));
        }
        Value::Object(read)
    }
}

/// Formats a datetime the way the server serialises naive datetimes.
pub fn format_time(time: NaiveDateTime) -> String {
    time.format("%Y-%m-%dT%H:%M:%S").to_string()
}

#[derive(Debug, Clone)]
pub struct Platform {
    pub identifier: u64,
    pub name: String,
}

#[derive(Debug)]
pub struct Catalogue {
    pub assets: Vec<Asset>,
    pub platforms: Vec<Platform>,
    /// Every asset `type` ever stored, as `/computational_asset_types` lists them.
    pub types: std::collections::BTreeSet<String>,
    /// Review requests, in creation order.
    pub submissions: Vec<Submission>,
    /// Sealed credentials by asset identifier, at most one per asset.
    pub hand_offs: std::collections::BTreeMap<String, HandOff>,
    /// The database that makes writes durable; `None` keeps everything in memory.
    database: Option<Database>,
}

/// A user's request to publish drafts.
#[derive(Debug, Clone)]
pub struct Submission {
    pub identifier: u64,
    /// Client id of the submitter.
    pub owner: String,
    pub asset_identifiers: Vec<String>,
    pub comment: String,
    pub request_date: NaiveDateTime,
    /// The decision, once made; empty while pending.
    pub reviews: Vec<SubmissionReview>,
}

/// A decision on a submission: `accepted`, `rejected` or `retracted`.
#[derive(Debug, Clone)]
pub struct SubmissionReview {
    pub identifier: u64,
    pub decision: String,
    pub comment: String,
    pub decision_date: NaiveDateTime,
    /// Client id of the reviewer, or of the submitter for a retraction.
    pub reviewer: String,
}

impl Default for Catalogue {
    fn default() -> Self {
        let platforms = BUILT_IN_PLATFORMS
            .iter()
            .enumerate()
            .map(|(index, name)| Platform { identifier: index as u64 + 1, name: (*name).to_owned() })
            .collect();
        Self {
            assets: Vec::new(),
            platforms,
            types: std::collections::BTreeSet::new(),
            submissions: Vec::new(),
            hand_offs: std::collections::BTreeMap::new(),
            database: None,
        }
    }
}

impl Catalogue {
    /// Builds a catalogue with the built-in platforms plus `extra` ones.
    pub fn with_platforms(extra: &[String]) -> Self {
        let mut catalogue = Self::default();
        for name in extra {
            if !catalogue.platform_exists(name) {
                let identifier = catalogue.platforms.iter().map(|platform| platform.identifier).max().unwrap_or(0) + 1;
                catalogue.platforms.push(Platform { identifier, name: name.clone() });
            }
        }
        catalogue
    }

    /// Attaches the state database that later writes go to.
    pub fn attach(&mut self, database: Database) {
        self.database = Some(database);
    }

    /// Adds a platform with the next free identifier and returns it.
    pub fn add_platform(&mut self, name: &str) -> anyhow::Result<u64> {
        let identifier = self.platforms.iter().map(|platform| platform.identifier).max().unwrap_or(0) + 1;
        self.write_platform(Platform { identifier, name: name.to_owned() })?;
        Ok(identifier)
    }

    /// Stores a new or changed platform, durably first.
    pub fn write_platform(&mut self, platform: Platform) -> anyhow::Result<()> {
        if let Some(database) = self.database.as_mut() {
            database.save_platform(&platform)?;
        }
        match self.platforms.iter_mut().find(|known| known.identifier == platform.identifier) {
            Some(known) => *known = platform,
            None => self.platforms.push(platform),
        }
        Ok(())
    }

    pub fn remove_platform(&mut self, identifier: u64) -> anyhow::Result<()> {
        if let Some(database) = self.database.as_mut() {
            database.delete_platform(identifier)?;
        }
        self.platforms.retain(|platform| platform.identifier != identifier);
        Ok(())
    }

    /// Stores a new or changed asset, durably first, and records its type.
    /// Deleting an asset discards its credentials hand-off.
    pub fn write_asset(&mut self, asset: Asset) -> anyhow::Result<()> {
        if let Some(database) = self.database.as_mut() {
            database.save_asset(&asset)?;
        }
        if let Some(kind) = asset.fields.get("type").and_then(Value::as_str) {
            self.types.insert(kind.to_owned());
        }
        if asset.deleted.is_some() {
            self.hand_offs.remove(&asset.identifier);
        }
        match self.assets.iter_mut().find(|known| known.identifier == asset.identifier) {
            Some(known) => *known = asset,
            None => self.assets.push(asset),
        }
        Ok(())
    }

    /// Stores a credentials hand-off, durably first, replacing an earlier one
    /// for the same asset.
    pub fn write_hand_off(&mut self, hand_off: HandOff) -> anyhow::Result<()> {
        if let Some(database) = self.database.as_mut() {
            database.save_hand_off(&hand_off)?;
        }
        self.hand_offs.insert(hand_off.asset_identifier.clone(), hand_off);
        Ok(())
    }

    /// Generates `comp_` followed by 24 alphanumerics, unique in the catalogue.
    pub fn new_identifier(&self) -> String {
        loop {
            let suffix: String = rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect();
            let identifier = format!("comp_{suffix}");
            if !self.assets.iter().any(|asset| asset.identifier == identifier) {
                return identifier;
            }
        }
    }

    pub fn platform_exists(&self, name: &str) -> bool {
        self.platforms.iter().any(|platform| platform.name == name)
    }

    /// Finds a live (not deleted) asset with the given platform pair.
    // TODO: this and the other lookups scan every asset, which caps POST
    // throughput as the catalogue grows; index by identifier and by pair.
    pub fn find_by_platform(&self, platform: &str, resource_identifier: &str) -> Option<&Asset> {
        self.assets.iter().find(|asset| {
            asset.deleted.is_none()
                && asset.platform() == Some(platform)
                && asset.platform_resource_identifier() == Some(resource_identifier)
        })
    }

    pub fn get(&self, identifier: &str) -> Option<&Asset> {
        self.assets.iter().find(|asset| asset.identifier == identifier)
    }
}
