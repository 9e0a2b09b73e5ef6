//! Lookups in a node's labels.

use std::collections::BTreeMap;

use crate::KeyValue;

/// A node's labels by key.
#[derive(Debug)]
pub struct Labels<'a> {
    by_key: BTreeMap<&'a str, &'a str>,
}

impl<'a> Labels<'a> {
    /// Indexes the labels. The API server keeps keys unique, so a repeated key
    /// can only come from a broken host and the last value wins.
    pub fn new(labels: &'a [KeyValue]) -> Self {
        Self { by_key: labels.iter().map(|label| (label.key.as_str(), label.value.as_str())).collect() }
    }

    /// Returns the value of a label. An empty value counts as absent, because
    /// every label read through this method carries its fact in the value.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.by_key.get(key).copied().filter(|value| !value.is_empty())
    }

    /// Returns the value of the first key present, so that current label
    /// keys can be listed before their deprecated `beta` forms.
    pub fn first(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|key| self.get(key))
    }

    /// Iterates over all labels in key order, empty values included.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.by_key.iter().map(|(&key, &value)| (key, value))
    }
}
