//! Serves a fake cluster until killed, for benchmarks that run the real
//! `hw-agent run` against it (bench/run-memory.sh).
//!
//! Usage: `serve KUBECONFIG NODES`: writes a kubeconfig for the cluster to
//! KUBECONFIG, adds NODES ready Nodes named `node-00000`, `node-00001`...,
//! prints `ready` and serves on 127.0.0.1 until the process is killed.

use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(kubeconfig), Some(count)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: serve KUBECONFIG NODES");
    };
    let count: usize = count.parse().map_err(|_| anyhow::anyhow!("NODES `{count}` is not a number"))?;
    let cluster = fake_kube::FakeCluster::start().await?;
    cluster.write_kubeconfig(std::path::Path::new(&kubeconfig), "bench-admin-token")?;
    for index in 0..count {
        let capacity = json!({"cpu": "64", "memory": "527921152Ki", "pods": "110", "nvidia.com/gpu": "8"});
        cluster.add_node(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("node-{index:05}"), "labels": {"kubernetes.io/arch": "amd64"}},
            "spec": {},
            "status": {
                "capacity": capacity, "allocatable": capacity,
                "conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "osImage": "Ubuntu 24.04.1 LTS",
                             "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://1.7.22",
                             "kubeletVersion": "v1.33.2", "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                             "bootID": ""}
            }
        }));
    }
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}
