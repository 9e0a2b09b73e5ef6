//! Publishes this node's report as its `NodeHardwareReport`, writing only
//! when the report changed.
//!
//! Each round reads the object (one GET), compares fingerprints, and writes
//! with server-side apply only on a difference. Reading every round, rather
//! than trusting a remembered fingerprint, recreates an object someone
//! deleted.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource as _};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::crd::{NodeHardwareReport, NodeHardwareReportSpec, ReportSummary};
use super::{Action, FIELD_MANAGER, KubeError, call, call_optional};
use crate::report::model::NodeReport;

/// The result of one publish round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Created,
    Updated,
    Unchanged,
}

/// The reason a round published nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "Node `{0}` does not exist, so its report has no owner and is not published; \
         set NODE_NAME from the downward API (fieldRef spec.nodeName)"
    )]
    NoSuchNode(String),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error("failed to serialise the node report: {0}")]
    Serialise(#[from] serde_json::Error),
}

/// Publishes one node's report.
#[derive(Debug)]
pub struct Publisher {
    reports: Api<NodeHardwareReport>,
    nodes: Api<Node>,
    node_name: String,
    /// The Node's UID, read once: the owner reference needs it.
    node_uid: Option<String>,
}

impl Publisher {
    pub fn new(client: kube::Client, node_name: impl Into<String>) -> Self {
        Self { reports: Api::all(client.clone()), nodes: Api::all(client), node_name: node_name.into(), node_uid: None }
    }

    pub async fn publish(&mut self, report: &NodeReport) -> Result<PublishOutcome, PublishError> {
        let fingerprint = fingerprint(report)?;
        let name = self.node_name.clone();
        let existing = call_optional(
            Action::cluster("get", super::crd::GROUP, super::crd::PLURAL, Some(&name)),
            self.reports.get(&name),
        )
        .await?;
        if existing.as_ref().is_some_and(|object| object.spec.fingerprint == fingerprint) {
            return Ok(PublishOutcome::Unchanged);
        }
        if existing.is_none() {
            // The report is new or was deleted, perhaps with its Node (the
            // leader or the garbage collector removes reports of deleted
            // Nodes): read the Node again rather than trust a cached UID.
            self.node_uid = None;
        }

        let owner = self.owner().await?;
        let object = NodeHardwareReport {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [("app.kubernetes.io/managed-by".to_owned(), FIELD_MANAGER.to_owned())].into_iter().collect(),
                ),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            spec: NodeHardwareReportSpec {
                node_name: name.clone(),
                fingerprint,
                agent_version: report.agent.version.clone(),
                summary: ReportSummary::of(report),
                report: serde_json::to_value(report)?,
            },
        };
        let mut object = serde_json::to_value(&object)?;
        // Server-side apply needs the type fields in the body.
        object["apiVersion"] = Value::from(NodeHardwareReport::api_version(&()).into_owned());
        object["kind"] = Value::from(NodeHardwareReport::kind(&()).into_owned());
        call(
            Action::cluster("patch", super::crd::GROUP, super::crd::PLURAL, Some(&name)),
            self.reports.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object)),
        )
        .await?;
        Ok(if existing.is_some() { PublishOutcome::Updated } else { PublishOutcome::Created })
    }

    async fn owner(&mut self) -> Result<OwnerReference, PublishError> {
        let uid = match &self.node_uid {
            Some(uid) => uid.clone(),
            None => {
                let node = call_optional(
                    Action::cluster("get", "", "nodes", Some(&self.node_name)),
                    self.nodes.get(&self.node_name),
                )
                .await?
                .ok_or_else(|| PublishError::NoSuchNode(self.node_name.clone()))?;
                let uid = node.metadata.uid.ok_or_else(|| PublishError::NoSuchNode(self.node_name.clone()))?;
                self.node_uid = Some(uid.clone());
                uid
            }
        };
        Ok(OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            name: self.node_name.clone(),
            uid,
            ..OwnerReference::default()
        })
    }
}

/// SHA-256 of the report without the fields that change on every
/// collection: the timestamp, collector durations and free memory. Two
/// reports with the same fingerprint describe the same hardware state.
pub fn fingerprint(report: &NodeReport) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(report)?;
    if let Some(object) = value.as_object_mut() {
        object.remove("generated_at");
    }
    if let Some(memory) = value.get_mut("memory").and_then(Value::as_object_mut) {
        memory.remove("available_bytes");
        if let Some(pools) = memory.get_mut("hugepages").and_then(Value::as_array_mut) {
            for pool in pools.iter_mut().filter_map(Value::as_object_mut) {
                pool.remove("free");
            }
        }
    }
    if let Some(collectors) = value.get_mut("collectors").and_then(Value::as_array_mut) {
        for collector in collectors.iter_mut().filter_map(Value::as_object_mut) {
            collector.remove("duration_ms");
        }
    }
    // Fields serialise in declaration order and maps in key order, so the
    // same report always gives the same text.
    let canonical = serde_json::to_vec(&value)?;
    Ok(hex::encode(Sha256::digest(canonical)))
}
