//! The real kube-rs client against the fake: the kubeconfig loads, TLS verifies,
//! typed objects round-trip and errors arrive as `kube::Error::Api` with the code
//! and reason the agent branches on.

use fake_kube::FakeCluster;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

async fn connect(fake: &FakeCluster, dir: &tempfile::TempDir, token: &str) -> Client {
    let path = dir.path().join(format!("kubeconfig-{}", token.len()));
    fake.write_kubeconfig(&path, token).expect("kubeconfig written");
    let kubeconfig = Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_client_round_trips_typed_objects() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeCluster::start().await.expect("fake API server starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let client = connect(&fake, &dir, "admin-token").await;

    let version = client.apiserver_version().await.expect("version");
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let kube_system = namespaces.get("kube-system").await.expect("kube-system");
    assert!(kube_system.metadata.uid.is_some());

    fake.add_node(json!({"metadata": {"name": "node-1"}, "status": {"capacity": {"cpu": "4"}}}));
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes.list(&ListParams::default().limit(1)).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    let missing = api_error(nodes.get("ghost").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "nodes \"ghost\" not found");

    let labelled = nodes
        .patch("node-1", &PatchParams::apply("hw-agent").force(), &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"aiod.eu/reported": "true"}},
        })))
        .await
        .expect("apply");
    assert_eq!(
        labelled.metadata.labels.as_ref().and_then(|labels| labels.get("aiod.eu/reported")).map(String::as_str),
        Some("true")
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), "aiod-hw-agent");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "pod-a"}}))
            .expect("lease");
    let created = leases.create(&PostParams::default(), &lease).await.expect("create");
    let mut renewed = created.clone();
    renewed.spec.as_mut().expect("spec").holder_identity = Some("pod-b".to_owned());
    leases.replace("leader", &PostParams::default(), &renewed).await.expect("replace");
    let conflict = api_error(leases.replace("leader", &PostParams::default(), &renewed).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    let exists = api_error(leases.create(&PostParams::default(), &lease).await);
    assert_eq!((exists.code, exists.reason.as_str()), (409, "AlreadyExists"));
    let deleted = leases.delete("leader", &DeleteParams::background()).await.expect("delete");
    assert!(deleted.is_right(), "leases return a Status on delete");

    fake.shutdown().await;
}

#[tokio::test]
async fn kube_client_sees_tokens_and_denials() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeCluster::start().await.expect("fake API server starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let admin = connect(&fake, &dir, "admin-token").await;

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "aiod-hw-agent");
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "hw-agent"}})).expect("account");
    accounts.create(&PostParams::default(), &account).await.expect("create account");
    fake.set_max_token_seconds(Some(3600));
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(7200), ..TokenRequestSpec::default() },
        ..TokenRequest::default()
    };
    let issued = accounts.create_token_request("hw-agent", &PostParams::default(), &request).await.expect("token");
    assert_eq!(issued.spec.expiration_seconds, Some(3600));
    let status = issued.status.expect("token status");

    let agent = connect(&fake, &dir, &status.token).await;
    let nodes: Api<Node> = Api::all(agent.clone());
    nodes.list(&ListParams::default()).await.expect("the issued token authenticates");
    fake.deny("list", "", "nodes");
    let denied = api_error(nodes.list(&ListParams::default()).await);
    assert_eq!((denied.code, denied.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        denied.message,
        "nodes is forbidden: User \"system:serviceaccount:aiod-hw-agent:hw-agent\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );

    let removed = accounts.delete("hw-agent", &DeleteParams::default()).await.expect("delete account");
    assert!(removed.is_left(), "service accounts return the object on delete");
    let revoked = api_error(agent.apiserver_version().await);
    assert_eq!(revoked.code, 401);

    fake.set_token_request_enabled(false);
    accounts.create(&PostParams::default(), &account).await.expect("create account again");
    let disabled = api_error(accounts.create_token_request("hw-agent", &PostParams::default(), &request).await);
    assert_eq!(disabled.code, 404);

    fake.shutdown().await;
}
