//! The fake's state: stored objects, credentials, settings and recorded requests,
//! plus the write paths and the controllers that react to writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::resources::{self, Resource, StatusSubresource};
use crate::{IssuedToken, RecordedRequest};

pub(crate) const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub(crate) const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const SERVICE_ACCOUNT_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

/// The identity a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The user of a kubeconfig written by `FakeCluster::write_kubeconfig`.
    Admin,
    ServiceAccount {
        namespace: String,
        name: String,
    },
}

impl Identity {
    pub fn user_name(&self) -> String {
        match self {
            Identity::Admin => "admin".to_owned(),
            Identity::ServiceAccount { namespace, name } => format!("system:serviceaccount:{namespace}:{name}"),
        }
    }
}

/// The identity behind a bearer token, with the conditions under which it stays valid.
pub(crate) enum Credential {
    Admin,
    /// A service account token. It stops working when the service account or the legacy
    /// token Secret is deleted. The account is compared by uid, so a re-created one does not
    /// revive the token.
    ServiceAccount {
        namespace: String,
        name: String,
        uid: String,
        secret: Option<String>,
        expires: Option<DateTime<Utc>>,
    },
}

pub(crate) struct State {
    pub objects: BTreeMap<String, Value>,
    resource_version: u64,
    /// Bearer token to credential; never logged.
    pub credentials: HashMap<String, Credential>,
    pub issued: Vec<IssuedToken>,
    /// Denied (verb, group, resource) triples.
    pub denials: BTreeSet<(String, String, String)>,
    /// When true, service-account identities get only what the stored RBAC
    /// objects grant them.
    pub rbac_enforced: bool,
    pub token_request_enabled: bool,
    pub max_token_seconds: Option<i64>,
    pub unavailable: bool,
    pub requests: Vec<RecordedRequest>,
    pub ca_pem: String,
}

pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system random number generator must work for the fake to issue tokens");
    bytes
}

/// 48 base64url characters from 36 random bytes.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<36>())
}

/// Five characters from the alphabet kube-apiserver uses for `generateName` suffixes.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>().iter().map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()])).collect()
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Returns the object's `metadata`, creating an empty map when it is missing or not a map.
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let metadata = object.as_object_mut().map(|map| map.entry("metadata").or_insert_with(|| json!({})));
    let metadata = metadata.expect("the object was made a map above");
    if !metadata.is_object() {
        *metadata = json!({});
    }
    metadata.as_object_mut().expect("metadata was made a map above")
}

fn service_account_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
}

fn secret_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets/{name}")
}

pub(crate) fn namespace_path(name: &str) -> String {
    format!("/api/v1/namespaces/{name}")
}

/// Copies the object without the fields a no-op write may change.
fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    let metadata = metadata_mut(&mut object);
    metadata.remove("resourceVersion");
    metadata.remove("managedFields");
    object
}

/// Copies the part of an object whose change bumps `metadata.generation`.
fn generation_view(object: &Value, status_enabled: bool) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
        if status_enabled {
            map.remove("status");
        }
    }
    object
}

impl State {
    /// Creates the state with the objects a fresh cluster has: three namespaces, each
    /// with its `default` service account, and three cluster roles.
    pub fn new(ca_pem: String) -> Self {
        let mut state = Self {
            objects: BTreeMap::new(),
            resource_version: 0,
            credentials: HashMap::new(),
            issued: Vec::new(),
            denials: BTreeSet::new(),
            rbac_enforced: false,
            token_request_enabled: true,
            max_token_seconds: None,
            unavailable: false,
            requests: Vec::new(),
            ca_pem,
        };
        let namespaces = resources::find("", "v1", "namespaces").expect("namespaces are in the resource table");
        for name in ["default", "kube-system", "aiod-hw-agent"] {
            let key = namespaces.object_path(None, name);
            state.store_new(namespaces, &key, json!({"metadata": {"name": name}}));
            state.after_write(namespaces, &key, true);
        }
        let cluster_roles = resources::find("rbac.authorization.k8s.io", "v1", "clusterroles")
            .expect("clusterroles are in the resource table");
        let read = json!(["get", "list", "watch"]);
        let roles = [
            (
                "cluster-admin",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            ),
            ("admin", json!([{"apiGroups": ["", "coordination.k8s.io"], "resources": ["*"], "verbs": ["*"]}])),
            (
                "view",
                json!([{"apiGroups": [""], "resources": ["namespaces", "nodes", "serviceaccounts"], "verbs": read}]),
            ),
        ];
        for (name, rules) in roles {
            let object = json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "rules": rules,
            });
            state.store_new(cluster_roles, &cluster_roles.object_path(None, name), object);
        }
        state
    }

    /// Advances the global resourceVersion counter and returns the new value.
    pub fn bump(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    pub fn current_resource_version(&self) -> String {
        self.resource_version.to_string()
    }

    pub fn authenticate(&self, token: Option<&str>) -> Option<Identity> {
        match self.credentials.get(token?)? {
            Credential::Admin => Some(Identity::Admin),
            Credential::ServiceAccount { namespace, name, uid, secret, expires } => {
                if expires.is_some_and(|expires| Utc::now() >= expires) {
                    return None;
                }
                let account = self.objects.get(&service_account_path(namespace, name))?;
                if meta_str(account, "uid") != Some(uid.as_str()) {
                    return None;
                }
                if let Some(secret) = secret
                    && !self.objects.contains_key(&secret_path(namespace, secret))
                {
                    return None;
                }
                Some(Identity::ServiceAccount { namespace: namespace.clone(), name: name.clone() })
            }
        }
    }

    /// Stored objects of a collection, sorted by key (so by name, or by namespace and
    /// name in an all-namespaces list of a namespaced resource).
    pub fn collection(&self, resource: &Resource, namespace: Option<&str>) -> Vec<(&String, &Value)> {
        let all_namespaces = resource.namespaced && namespace.is_none();
        let prefix = if all_namespaces {
            format!("{}/namespaces/", resource.prefix())
        } else {
            format!("{}/", resource.collection_path(namespace))
        };
        self.objects
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .filter(|(key, _)| {
                let rest = &key[prefix.len()..];
                if all_namespaces {
                    let parts: Vec<&str> = rest.split('/').collect();
                    parts.len() == 3 && parts[1] == resource.plural
                } else {
                    !rest.contains('/')
                }
            })
            .collect()
    }

    pub fn is_denied(&self, verb: &str, group: &str, resource: &str) -> bool {
        self.denials.contains(&(verb.to_owned(), group.to_owned(), resource.to_owned()))
    }

    /// Checks whether `resource` has a `/status` subresource. For a custom resource that
    /// depends on its stored CRD, and without a CRD it has none.
    pub fn status_enabled(&self, resource: &Resource) -> bool {
        match resource.status {
            StatusSubresource::Absent => false,
            StatusSubresource::Always => true,
            StatusSubresource::FromCrd => {
                let crd =
                    format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}", resource.group_resource());
                self.objects
                    .get(&crd)
                    .and_then(|crd| crd.pointer("/spec/versions"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|version| version.get("name").and_then(Value::as_str) == Some(resource.version))
                    .is_some_and(|version| version.pointer("/subresources/status").is_some_and(Value::is_object))
            }
        }
    }

    /// Sets kind, apiVersion, name and namespace from the resource and the key.
    fn canonicalize(resource: &Resource, key: &str, object: &mut Value) {
        let metadata = metadata_mut(object);
        let name = key.rsplit('/').next().unwrap_or_default();
        metadata.insert("name".to_owned(), Value::from(name));
        if resource.namespaced {
            let namespace =
                key.split("/namespaces/").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or_default();
            metadata.insert("namespace".to_owned(), Value::from(namespace));
        } else {
            metadata.remove("namespace");
        }
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".to_owned(), Value::from(resource.api_version()));
            map.insert("kind".to_owned(), Value::from(resource.kind));
        }
    }

    /// Fills what kube-apiserver sets on create (uid, creationTimestamp, resourceVersion,
    /// generation and per-resource defaults) and stores the object under `key`.
    pub fn store_new(&mut self, resource: &Resource, key: &str, mut object: Value) -> Value {
        let resource_version = self.bump();
        self.prepare_new(resource, key, &mut object, Some(resource_version));
        self.objects.insert(key.to_owned(), object.clone());
        object
    }

    /// Fills `object` as `store_new` does without storing it; a dry run passes no
    /// resourceVersion, so the global counter stays put.
    pub fn prepare_new(&self, resource: &Resource, key: &str, object: &mut Value, resource_version: Option<String>) {
        Self::canonicalize(resource, key, object);
        let status_enabled = self.status_enabled(resource);
        let metadata = metadata_mut(object);
        metadata.insert("uid".to_owned(), Value::from(new_uid()));
        metadata.insert("creationTimestamp".to_owned(), Value::from(now()));
        match resource_version {
            Some(resource_version) => metadata.insert("resourceVersion".to_owned(), Value::from(resource_version)),
            None => metadata.remove("resourceVersion"),
        };
        metadata.remove("deletionTimestamp");
        if resource.generation {
            metadata.insert("generation".to_owned(), Value::from(1));
        } else {
            metadata.remove("generation");
        }
        if resource.is("", "namespaces") {
            let name = metadata.get("name").cloned().unwrap_or_default();
            let labels = metadata.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert("kubernetes.io/metadata.name".to_owned(), name);
            }
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        } else if resource.status == StatusSubresource::FromCrd
            && status_enabled
            && let Some(map) = object.as_object_mut()
        {
            // A custom resource with a status subresource ignores status on create.
            map.remove("status");
        }
    }

    /// Computes the stored form of a write to an existing object and stores it unless
    /// `dry_run`. Returns `old` unchanged for a no-op write, which like kube-apiserver
    /// keeps the resourceVersion.
    pub fn store_update(
        &mut self,
        resource: &Resource,
        key: &str,
        old: &Value,
        mut new: Value,
        subresource: Option<&str>,
        dry_run: bool,
    ) -> Value {
        let status_enabled = self.status_enabled(resource);
        if subresource == Some("status") {
            // A status write changes nothing but status.
            let status = new.get("status").cloned();
            new = old.clone();
            match (new.as_object_mut(), status) {
                (Some(map), Some(status)) => {
                    map.insert("status".to_owned(), status);
                }
                (Some(map), None) => {
                    map.remove("status");
                }
                _ => {}
            }
        } else if status_enabled && let Some(map) = new.as_object_mut() {
            match old.get("status") {
                Some(status) => map.insert("status".to_owned(), status.clone()),
                None => map.remove("status"),
            };
        }
        Self::canonicalize(resource, key, &mut new);
        let metadata = metadata_mut(&mut new);
        let old_metadata = old.get("metadata");
        for field in ["uid", "creationTimestamp", "generation", "deletionTimestamp"] {
            match old_metadata.and_then(|old_metadata| old_metadata.get(field)) {
                Some(value) => metadata.insert(field.to_owned(), value.clone()),
                None => metadata.remove(field),
            };
        }
        // An update that leaves managedFields out keeps the stored entries.
        if let Some(managed_fields) = old_metadata.and_then(|old_metadata| old_metadata.get("managedFields")) {
            metadata.entry("managedFields").or_insert_with(|| managed_fields.clone());
        }
        if resource.generation && generation_view(old, status_enabled) != generation_view(&new, status_enabled) {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            metadata_mut(&mut new).insert("generation".to_owned(), Value::from(generation));
        }
        if comparable(old) == comparable(&new) {
            return old.clone();
        }
        if dry_run {
            return new;
        }
        let resource_version = self.bump();
        metadata_mut(&mut new).insert("resourceVersion".to_owned(), Value::from(resource_version));
        self.objects.insert(key.to_owned(), new.clone());
        new
    }

    /// Runs what kube-controller-manager would do after a write: the legacy token
    /// controller fills token Secrets, the service account controller adds `default`
    /// to new namespaces, and the apiextensions controller marks CRDs Established.
    pub fn after_write(&mut self, resource: &Resource, key: &str, created: bool) {
        if created && resource.is("", "secrets") {
            self.fill_token_secret(key);
        } else if created && resource.is("", "namespaces") {
            let name = key.rsplit('/').next().unwrap_or_default().to_owned();
            let accounts =
                resources::find("", "v1", "serviceaccounts").expect("serviceaccounts are in the resource table");
            let account_key = service_account_path(&name, "default");
            if !self.objects.contains_key(&account_key) {
                self.store_new(accounts, &account_key, json!({}));
            }
        } else if resource.is("apiextensions.k8s.io", "customresourcedefinitions") {
            self.establish_crd(key);
        }
    }

    /// Fills `data.token`, `data.ca.crt` and `data.namespace` of a new Secret of type
    /// `kubernetes.io/service-account-token` whose service account exists.
    ///
    /// NOTE: the real token controller deletes such a Secret when its service account is
    /// missing; the fake leaves it unfilled.
    fn fill_token_secret(&mut self, key: &str) {
        let Some(secret) = self.objects.get(key) else { return };
        if secret.get("type").and_then(Value::as_str) != Some(SERVICE_ACCOUNT_TOKEN_TYPE) {
            return;
        }
        let (Some(namespace), Some(secret_name)) = (meta_str(secret, "namespace"), meta_str(secret, "name")) else {
            return;
        };
        let Some(account_name) = secret
            .pointer("/metadata/annotations")
            .and_then(|annotations| annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION).and_then(Value::as_str))
        else {
            return;
        };
        let Some(account_uid) = self
            .objects
            .get(&service_account_path(namespace, account_name))
            .and_then(|account| meta_str(account, "uid"))
        else {
            return;
        };
        let (namespace, secret_name, account_name, account_uid) =
            (namespace.to_owned(), secret_name.to_owned(), account_name.to_owned(), account_uid.to_owned());

        let token = random_token();
        let resource_version = self.bump();
        let ca = STANDARD.encode(&self.ca_pem);
        let Some(secret) = self.objects.get_mut(key) else { return };
        let data = secret.as_object_mut().map(|map| map.entry("data").or_insert_with(|| json!({})));
        if let Some(Value::Object(data)) = data {
            data.insert("token".to_owned(), Value::from(STANDARD.encode(&token)));
            data.insert("ca.crt".to_owned(), Value::from(ca));
            data.insert("namespace".to_owned(), Value::from(STANDARD.encode(&namespace)));
        }
        let metadata = metadata_mut(secret);
        metadata.insert("resourceVersion".to_owned(), Value::from(resource_version));
        if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
            annotations.insert(SERVICE_ACCOUNT_UID_ANNOTATION.to_owned(), Value::from(account_uid.clone()));
        }

        self.issued.push(IssuedToken {
            namespace: namespace.clone(),
            service_account: account_name.clone(),
            token: token.clone(),
            expiration_timestamp: None,
        });
        self.credentials.insert(
            token,
            Credential::ServiceAccount {
                namespace,
                name: account_name,
                uid: account_uid,
                secret: Some(secret_name),
                expires: None,
            },
        );
    }

    /// Sets the status a CRD gets once its names are accepted and it is served.
    fn establish_crd(&mut self, key: &str) {
        let Some(crd) = self.objects.get(key) else { return };
        let accepted_names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
        let stored_versions: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|version| version.get("storage").and_then(Value::as_bool) == Some(true))
            .filter_map(|version| version.get("name").cloned())
            .collect();
        let time = now();
        let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": time, "reason": reason, "message": message});
        let status = json!({
            "acceptedNames": accepted_names,
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "storedVersions": stored_versions,
        });
        let unchanged = crd.get("status").is_some_and(|old| {
            old.get("acceptedNames") == status.get("acceptedNames")
                && old.get("storedVersions") == status.get("storedVersions")
                && old.get("conditions").and_then(Value::as_array).map(Vec::len) == Some(2)
        });
        if unchanged {
            return;
        }
        let resource_version = self.bump();
        if let Some(crd) = self.objects.get_mut(key) {
            crd["status"] = status;
            metadata_mut(crd).insert("resourceVersion".to_owned(), Value::from(resource_version));
        }
    }

    /// Stores a test fixture at `key` as given, filling uid and creationTimestamp when
    /// missing. The global resourceVersion always advances; the object takes the new
    /// value unless `keep_resource_version` and it has one.
    pub fn put_fixture(&mut self, resource: &Resource, key: &str, mut object: Value, keep_resource_version: bool) {
        Self::canonicalize(resource, key, &mut object);
        let resource_version = self.bump();
        let metadata = metadata_mut(&mut object);
        metadata.entry("uid").or_insert_with(|| Value::from(new_uid()));
        metadata.entry("creationTimestamp").or_insert_with(|| Value::from(now()));
        if !keep_resource_version || !metadata.contains_key("resourceVersion") {
            metadata.insert("resourceVersion".to_owned(), Value::from(resource_version));
        }
        self.objects.insert(key.to_owned(), object);
    }
}
