//! In-memory catalogue of computational assets and platforms, with the
//! ownership and visibility rules of the real server.
//!
//! NOTE: nothing is persisted yet; a restart starts from the seeded
//! platforms with no assets.

use chrono::NaiveDateTime;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

/// Platforms the real catalogue ships with, in its seeding order.
pub const BUILT_IN_PLATFORMS: &[&str] =
    &["aiod", "ai4europe_cms", "example", "openml", "huggingface", "zenodo", "ai4experiments", "aibuilder"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Draft,
    Submitted,
    Published,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Submitted => "submitted",
            Status::Published => "published",
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
}

impl Default for Catalogue {
    fn default() -> Self {
        let platforms = BUILT_IN_PLATFORMS
            .iter()
            .enumerate()
            .map(|(index, name)| Platform { identifier: index as u64 + 1, name: (*name).to_owned() })
            .collect();
        Self { assets: Vec::new(), platforms, types: std::collections::BTreeSet::new() }
    }
}

impl Catalogue {
    /// Builds a catalogue with the built-in platforms plus `extra` ones.
    pub fn with_platforms(extra: &[String]) -> Self {
        let mut catalogue = Self::default();
        for name in extra {
            if !catalogue.platform_exists(name) {
                catalogue.add_platform(name);
            }
        }
        catalogue
    }

    /// Adds a platform with the next free identifier and returns it.
    pub fn add_platform(&mut self, name: &str) -> u64 {
        let identifier = self.platforms.iter().map(|platform| platform.identifier).max().unwrap_or(0) + 1;
        self.platforms.push(Platform { identifier, name: name.to_owned() });
        identifier
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

    pub fn get_mut(&mut self, identifier: &str) -> Option<&mut Asset> {
        self.assets.iter_mut().find(|asset| asset.identifier == identifier)
    }
}
