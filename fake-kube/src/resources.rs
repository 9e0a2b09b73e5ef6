//! The resource types the fake serves, and the parsing of request paths into them.
//!
//! Each entry copies the registry behaviour of kube-apiserver 1.33 that a client can
//! observe: the delete response, create-on-update, whether an update needs a
//! resourceVersion, `metadata.generation` and the `/status` subresource.

/// The availability of a resource's `/status` subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusSubresource {
    /// No `/status` subresource, so writes to the main resource change `status` freely.
    Absent,
    /// Built-in `/status` subresource, as on nodes, namespaces and CRDs.
    Always,
    /// Custom resource: enabled when the stored CRD declares `subresources.status` for this version.
    FromCrd,
}

/// The validation rule for `metadata.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// Any path segment without `/` or `%` (RBAC objects, whose names contain `:`).
    PathSegment,
}

/// One served resource type.
#[derive(Debug)]
pub(crate) struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// DELETE returns the object instead of a Success `Status` (`ReturnDeletedObject` in the registry).
    pub delete_returns_object: bool,
    /// PUT on a missing object creates it (`AllowCreateOnUpdate`).
    pub create_on_update: bool,
    /// PUT without `metadata.resourceVersion` is accepted (`AllowUnconditionalUpdate`).
    pub unconditional_update: bool,
    /// The server maintains `metadata.generation`.
    pub generation: bool,
    pub status: StatusSubresource,
    pub name_rule: NameRule,
    /// Field selector keys besides `metadata.name` and `metadata.namespace`.
    pub extra_fields: &'static [&'static str],
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_owned() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `plural.group`, or just `plural` in the core group, as in kube-apiserver's error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.to_owned() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `/api/v1` or `/apis/{group}/{version}`.
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// API path of a collection; `namespace` is ignored for cluster-scoped resources, and
    /// `None` on a namespaced resource gives the all-namespaces path.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(namespace) if self.namespaced => format!("{}/namespaces/{namespace}/{}", self.prefix(), self.plural),
            _ => format!("{}/{}", self.prefix(), self.plural),
        }
    }

    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

const fn resource(group: &'static str, version: &'static str, plural: &'static str, kind: &'static str) -> Resource {
    Resource {
        group,
        version,
        plural,
        kind,
        namespaced: false,
        delete_returns_object: false,
        create_on_update: false,
        unconditional_update: true,
        generation: false,
        status: StatusSubresource::Absent,
        name_rule: NameRule::Subdomain,
        extra_fields: &[],
    }
}

pub(crate) static RESOURCES: &[Resource] = &[
    Resource {
        status: StatusSubresource::Always,
        extra_fields: &["spec.unschedulable"],
        ..resource("", "v1", "nodes", "Node")
    },
    Resource {
        delete_returns_object: true,
        status: StatusSubresource::Always,
        name_rule: NameRule::Label,
        extra_fields: &["status.phase"],
        ..resource("", "v1", "namespaces", "Namespace")
    },
    Resource {
        namespaced: true,
        delete_returns_object: true,
        ..resource("", "v1", "serviceaccounts", "ServiceAccount")
    },
    Resource { namespaced: true, extra_fields: &["type"], ..resource("", "v1", "secrets", "Secret") },
    Resource {
        namespaced: true,
        create_on_update: true,
        unconditional_update: false,
        ..resource("coordination.k8s.io", "v1", "leases", "Lease")
    },
    Resource {
        create_on_update: true,
        name_rule: NameRule::PathSegment,
        ..resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole")
    },
    Resource {
        create_on_update: true,
        name_rule: NameRule::PathSegment,
        ..resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding")
    },
    Resource {
        namespaced: true,
        create_on_update: true,
        name_rule: NameRule::PathSegment,
        ..resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
    },
    Resource {
        namespaced: true,
        create_on_update: true,
        name_rule: NameRule::PathSegment,
        ..resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
    },
    Resource {
        generation: true,
        status: StatusSubresource::FromCrd,
        ..resource("hw-agent.aiod.eu", "v1alpha1", "nodehardwarereports", "NodeHardwareReport")
    },
    Resource {
        delete_returns_object: true,
        generation: true,
        status: StatusSubresource::Always,
        ..resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition")
    },
];

pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|resource| resource.group == group && resource.version == version && resource.plural == plural)
}

/// The target a request path names.
#[derive(Debug)]
pub(crate) enum Target {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`
    GroupVersion {
        group: String,
        version: String,
    },
    /// A collection; `namespace` is `None` for cluster-scoped resources and for all-namespaces lists.
    Collection {
        resource: &'static Resource,
        namespace: Option<String>,
    },
    Object {
        resource: &'static Resource,
        namespace: Option<String>,
        name: String,
        subresource: Option<String>,
    },
    Unknown,
}

/// Parses a request path (without the query) the way kube-apiserver's router does.
pub(crate) fn parse_path(path: &str) -> Target {
    match path {
        "/version" | "/version/" => return Target::Version,
        "/healthz" | "/livez" | "/readyz" => return Target::Health,
        _ => {}
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return Target::Unknown;
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Target::CoreVersions,
        ["apis"] => return Target::Groups,
        ["apis", group] => return Target::Group((*group).to_owned()),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Target::Unknown,
    };
    if rest.is_empty() {
        return Target::GroupVersion { group: group.to_owned(), version: version.to_owned() };
    }

    // `namespaces/{ns}/{plural}...` addresses a namespaced resource; anything else after
    // `namespaces` (such as `namespaces/{name}/status`) addresses the namespace itself.
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, rest @ ..]
            if find(group, version, plural).is_some_and(|resource| resource.namespaced) =>
        {
            (Some((*namespace).to_owned()), {
                let mut tail = vec![*plural];
                tail.extend_from_slice(rest);
                tail
            })
        }
        _ => (None, rest.to_vec()),
    };
    let Some(resource) = find(group, version, rest[0]) else {
        return Target::Unknown;
    };
    if !resource.namespaced && namespace.is_some() {
        return Target::Unknown;
    }
    match rest.as_slice() {
        [_] => Target::Collection { resource, namespace },
        // A namespaced object is only reachable through its namespace.
        [_, ..] if resource.namespaced && namespace.is_none() => Target::Unknown,
        [_, name] => Target::Object { resource, namespace, name: (*name).to_owned(), subresource: None },
        [_, name, subresource] => Target::Object {
            resource,
            namespace,
            name: (*name).to_owned(),
            subresource: Some((*subresource).to_owned()),
        },
        _ => Target::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_and_namespaced_paths() {
        assert!(
            matches!(parse_path("/api/v1/namespaces"), Target::Collection { resource, namespace: None } if resource.plural == "namespaces")
        );
        assert!(
            matches!(parse_path("/api/v1/namespaces/ns"), Target::Object { resource, name, .. } if resource.plural == "namespaces" && name == "ns")
        );
        assert!(
            matches!(parse_path("/api/v1/namespaces/ns/status"), Target::Object { subresource: Some(sub), .. } if sub == "status")
        );
        assert!(
            matches!(parse_path("/api/v1/namespaces/ns/secrets"), Target::Collection { resource, namespace: Some(ns) } if resource.plural == "secrets" && ns == "ns")
        );
        assert!(
            matches!(parse_path("/api/v1/namespaces/ns/serviceaccounts/sa/token"), Target::Object { subresource: Some(sub), .. } if sub == "token")
        );
        assert!(matches!(parse_path("/api/v1/secrets"), Target::Collection { namespace: None, .. }));
        assert!(matches!(parse_path("/api/v1/secrets/x"), Target::Unknown));
        assert!(matches!(parse_path("/api/v1/namespaces/ns/nodes"), Target::Object { subresource: Some(_), .. }));
        assert!(
            matches!(parse_path("/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"), Target::Object { name, .. } if name == "l")
        );
        assert!(matches!(parse_path("/apis/hw-agent.aiod.eu/v1alpha1/nodehardwarereports/n"), Target::Object { .. }));
        assert!(matches!(
            parse_path("/apis/hw-agent.aiod.eu/v1alpha1/namespaces/ns/nodehardwarereports"),
            Target::Unknown
        ));
        assert!(matches!(parse_path("/api/v1/pods"), Target::Unknown));
        assert!(matches!(parse_path("/api/v1/nodes/"), Target::Unknown));
    }
}
