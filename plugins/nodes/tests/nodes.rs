//! Maps Node objects shaped like the ones real clusters serve (EKS GPU nodes,
//! an AMD GPU operator node, kubeadm control planes, GKE, Trainium, TPU) and
//! checks the records field by field.

use hw_collector_nodes::{
    AcceleratorResource, ExtendedResource, KeyValue, NodeCondition, NodeObject, NodeRecord, NodeSystemInfo, NodeTaint,
    ResourceAmounts, build_node_record, build_node_records,
};

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

fn pairs(entries: &[(&str, &str)]) -> Vec<KeyValue> {
    entries.iter().map(|(key, value)| KeyValue { key: (*key).to_owned(), value: (*value).to_owned() }).collect()
}

fn condition(condition_type: &str, status: &str) -> NodeCondition {
    NodeCondition {
        condition_type: condition_type.to_owned(),
        status: status.to_owned(),
        reason: None,
        last_transition_time: Some("2025-03-14T09:27:40Z".to_owned()),
    }
}

fn taint(key: &str, value: Option<&str>, effect: &str) -> NodeTaint {
    NodeTaint { key: key.to_owned(), value: value.map(str::to_owned), effect: effect.to_owned() }
}

fn healthy_conditions() -> Vec<NodeCondition> {
    vec![
        condition("MemoryPressure", "False"),
        condition("DiskPressure", "False"),
        condition("PIDPressure", "False"),
        condition("Ready", "True"),
    ]
}

/// Returns a node with only a name and uid, for tests that set one field.
fn bare_node(name: &str) -> NodeObject {
    NodeObject {
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        creation_timestamp: None,
        labels: Vec::new(),
        capacity: Vec::new(),
        allocatable: Vec::new(),
        node_info: None,
        conditions: Vec::new(),
        taints: Vec::new(),
        unschedulable: false,
        provider_id: None,
    }
}

fn build(node: &NodeObject) -> (NodeRecord, Vec<String>) {
    let mut warnings = Vec::new();
    let record = build_node_record(node, &mut warnings);
    (record, warnings)
}

fn extended(entries: &[(&str, u64)]) -> Vec<ExtendedResource> {
    entries.iter().map(|(name, amount)| ExtendedResource { name: (*name).to_owned(), amount: *amount }).collect()
}

// ---------------------------------------------------------------- fixtures

/// Returns an EKS p5.48xlarge node with eight H100 GPUs, labelled by NVIDIA GPU
/// Feature Discovery.
fn h100_node() -> NodeObject {
    NodeObject {
        name: "ip-10-0-12-34.ec2.internal".to_owned(),
        uid: "6f1c2d2e-8a4b-4c0e-9a57-3b1f0d9e7a21".to_owned(),
        creation_timestamp: Some("2025-03-14T09:26:53Z".to_owned()),
        labels: pairs(&[
            ("beta.kubernetes.io/arch", "amd64"),
            ("beta.kubernetes.io/instance-type", "p5.48xlarge"),
            ("beta.kubernetes.io/os", "linux"),
            ("eks.amazonaws.com/nodegroup", "gpu-h100"),
            ("failure-domain.beta.kubernetes.io/region", "us-east-1"),
            ("failure-domain.beta.kubernetes.io/zone", "us-east-1a"),
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/hostname", "ip-10-0-12-34.ec2.internal"),
            ("kubernetes.io/os", "linux"),
            ("node.kubernetes.io/instance-type", "p5.48xlarge"),
            ("nvidia.com/cuda.driver.major", "550"),
            ("nvidia.com/gpu.compute.major", "9"),
            ("nvidia.com/gpu.compute.minor", "0"),
            ("nvidia.com/gpu.count", "8"),
            ("nvidia.com/gpu.family", "hopper"),
            ("nvidia.com/gpu.machine", "p5.48xlarge"),
            ("nvidia.com/gpu.memory", "81559"),
            ("nvidia.com/gpu.present", "true"),
            ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
            ("nvidia.com/gpu.replicas", "1"),
            ("nvidia.com/mig.capable", "true"),
            ("topology.kubernetes.io/region", "us-east-1"),
            ("topology.kubernetes.io/zone", "us-east-1a"),
        ]),
        capacity: pairs(&[
            ("cpu", "192"),
            ("ephemeral-storage", "1874715300Ki"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "2097021212Ki"),
            ("nvidia.com/gpu", "8"),
            ("pods", "100"),
            ("vpc.amazonaws.com/efa", "32"),
        ]),
        allocatable: pairs(&[
            ("cpu", "191450m"),
            ("ephemeral-storage", "1726692709493"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "2045445916Ki"),
            ("nvidia.com/gpu", "8"),
            ("pods", "100"),
            ("vpc.amazonaws.com/efa", "32"),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_owned(),
            operating_system: "linux".to_owned(),
            os_image: "Amazon Linux 2023.6.20250218".to_owned(),
            kernel_version: "6.1.127-135.201.amzn2023.x86_64".to_owned(),
            container_runtime_version: "containerd://1.7.25".to_owned(),
            kubelet_version: "v1.31.5-eks-5d632ec".to_owned(),
        }),
        conditions: healthy_conditions(),
        taints: vec![taint("nvidia.com/gpu", None, "NoSchedule")],
        unschedulable: false,
        provider_id: Some("aws:///us-east-1a/i-0a1b2c3d4e5f67890".to_owned()),
    }
}

/// Returns a bare-metal node with eight MI300X GPUs, labelled by the AMD GPU node
/// labeller. One GPU is unhealthy, so allocatable is one below capacity.
fn mi300x_node() -> NodeObject {
    NodeObject {
        name: "mi300x-07".to_owned(),
        uid: "0b8e4d55-2f61-4d1a-8c3e-5e9f7a6b4c21".to_owned(),
        creation_timestamp: Some("2025-01-20T16:02:11Z".to_owned()),
        labels: pairs(&[
            ("amd.com/gpu.cu-count", "304"),
            ("amd.com/gpu.device-id", "74a1"),
            ("amd.com/gpu.driver-version", "6.10.5"),
            ("amd.com/gpu.family", "AI"),
            ("amd.com/gpu.product-name", "AMD_Instinct_MI300X_OAM"),
            ("amd.com/gpu.simd-count", "1216"),
            ("amd.com/gpu.vram", "192G"),
            ("beta.amd.com/gpu.family.AI", "8"),
            ("beta.amd.com/gpu.product-name", "AMD_Instinct_MI300X_OAM"),
            ("beta.amd.com/gpu.vram", "192G"),
            ("beta.amd.com/gpu.vram.192G", "8"),
            ("feature.node.kubernetes.io/amd-gpu", "true"),
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/hostname", "mi300x-07"),
            ("kubernetes.io/os", "linux"),
            ("node-role.kubernetes.io/worker", ""),
        ]),
        capacity: pairs(&[
            ("amd.com/gpu", "8"),
            ("cpu", "256"),
            ("ephemeral-storage", "1844413164Ki"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "2377021624Ki"),
            ("pods", "110"),
        ]),
        allocatable: pairs(&[
            ("amd.com/gpu", "7"),
            ("cpu", "256"),
            ("ephemeral-storage", "1699818747462"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "2376919224Ki"),
            ("pods", "110"),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_owned(),
            operating_system: "linux".to_owned(),
            os_image: "Ubuntu 22.04.5 LTS".to_owned(),
            kernel_version: "5.15.0-131-generic".to_owned(),
            container_runtime_version: "containerd://1.7.24".to_owned(),
            kubelet_version: "v1.32.2".to_owned(),
        }),
        conditions: healthy_conditions(),
        taints: Vec::new(),
        unschedulable: false,
        provider_id: None,
    }
}

/// Returns a kubeadm control-plane node on arm64.
fn control_plane_node() -> NodeObject {
    NodeObject {
        name: "cp-1".to_owned(),
        uid: "c1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8".to_owned(),
        creation_timestamp: Some("2024-11-02T08:15:00Z".to_owned()),
        labels: pairs(&[
            ("kubernetes.io/arch", "arm64"),
            ("kubernetes.io/hostname", "cp-1"),
            ("kubernetes.io/os", "linux"),
            ("node-role.kubernetes.io/control-plane", ""),
            ("node.kubernetes.io/exclude-from-external-load-balancers", ""),
        ]),
        capacity: pairs(&[
            ("cpu", "4"),
            ("ephemeral-storage", "101430960Ki"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("hugepages-32Mi", "0"),
            ("hugepages-64Ki", "0"),
            ("memory", "16331588Ki"),
            ("pods", "110"),
        ]),
        allocatable: pairs(&[
            ("cpu", "4"),
            ("ephemeral-storage", "93478772582"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("hugepages-32Mi", "0"),
            ("hugepages-64Ki", "0"),
            ("memory", "16229188Ki"),
            ("pods", "110"),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "arm64".to_owned(),
            operating_system: "linux".to_owned(),
            os_image: "Debian GNU/Linux 12 (bookworm)".to_owned(),
            kernel_version: "6.1.0-28-arm64".to_owned(),
            container_runtime_version: "containerd://1.7.22".to_owned(),
            kubelet_version: "v1.31.2".to_owned(),
        }),
        conditions: healthy_conditions(),
        taints: vec![taint("node-role.kubernetes.io/control-plane", None, "NoSchedule")],
        unschedulable: false,
        provider_id: None,
    }
}

/// Returns a worker that was cordoned and then stopped reporting: the node
/// lifecycle controller set every condition to `Unknown` and added the
/// `unreachable` taints.
fn cordoned_unreachable_node() -> NodeObject {
    let unknown = |condition_type: &str| NodeCondition {
        condition_type: condition_type.to_owned(),
        status: "Unknown".to_owned(),
        reason: Some("NodeStatusUnknown".to_owned()),
        last_transition_time: Some("2025-03-15T02:41:07Z".to_owned()),
    };
    NodeObject {
        name: "worker-3".to_owned(),
        uid: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a".to_owned(),
        creation_timestamp: Some("2024-11-02T08:31:44Z".to_owned()),
        labels: pairs(&[("kubernetes.io/hostname", "worker-3"), ("kubernetes.io/os", "linux")]),
        capacity: pairs(&[("cpu", "16"), ("memory", "65842500Ki"), ("pods", "110")]),
        allocatable: pairs(&[("cpu", "15800m"), ("memory", "65240100Ki"), ("pods", "110")]),
        node_info: None,
        conditions: vec![unknown("MemoryPressure"), unknown("DiskPressure"), unknown("PIDPressure"), unknown("Ready")],
        taints: vec![
            taint("node.kubernetes.io/unreachable", None, "NoExecute"),
            taint("node.kubernetes.io/unreachable", None, "NoSchedule"),
            taint("node.kubernetes.io/unschedulable", None, "NoSchedule"),
        ],
        unschedulable: true,
        provider_id: None,
    }
}

// ---------------------------------------------------------------- NVIDIA H100

#[test]
fn h100_identity_and_placement() {
    let (record, warnings) = build(&h100_node());
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(record.name, "ip-10-0-12-34.ec2.internal");
    assert_eq!(record.uid, "6f1c2d2e-8a4b-4c0e-9a57-3b1f0d9e7a21");
    assert_eq!(record.roles, Vec::<String>::new());
    assert_eq!(record.instance_type.as_deref(), Some("p5.48xlarge"));
    assert_eq!(record.zone.as_deref(), Some("us-east-1a"));
    assert_eq!(record.region.as_deref(), Some("us-east-1"));
    assert_eq!(record.created.as_deref(), Some("2025-03-14T09:26:53Z"));
}

#[test]
fn h100_node_info() {
    let (record, _) = build(&h100_node());
    assert_eq!(record.architecture.as_deref(), Some("amd64"));
    assert_eq!(record.operating_system.as_deref(), Some("linux"));
    assert_eq!(record.os_image.as_deref(), Some("Amazon Linux 2023.6.20250218"));
    assert_eq!(record.kernel_version.as_deref(), Some("6.1.127-135.201.amzn2023.x86_64"));
    assert_eq!(record.kubelet_version.as_deref(), Some("v1.31.5-eks-5d632ec"));
    assert_eq!(record.container_runtime.as_deref(), Some("containerd://1.7.25"));
}

#[test]
fn h100_capacity_and_allocatable() {
    let (record, _) = build(&h100_node());
    let efa_and_gpus =
        extended(&[("hugepages-1Gi", 0), ("hugepages-2Mi", 0), ("nvidia.com/gpu", 8), ("vpc.amazonaws.com/efa", 32)]);
    assert_eq!(
        record.capacity,
        ResourceAmounts {
            cpu_millicores: Some(192_000),
            memory_bytes: Some(2_097_021_212 * KI),
            ephemeral_storage_bytes: Some(1_874_715_300 * KI),
            pods: Some(100),
            extended: efa_and_gpus.clone(),
        }
    );
    assert_eq!(
        record.allocatable,
        ResourceAmounts {
            cpu_millicores: Some(191_450),
            memory_bytes: Some(2_045_445_916 * KI),
            ephemeral_storage_bytes: Some(1_726_692_709_493),
            pods: Some(100),
            extended: efa_and_gpus,
        }
    );
}

#[test]
fn h100_accelerator_from_feature_discovery() {
    let (record, _) = build(&h100_node());
    assert_eq!(
        record.accelerators,
        vec![AcceleratorResource {
            resource: "nvidia.com/gpu".to_owned(),
            vendor: "nvidia".to_owned(),
            count: 8,
            allocatable: 8,
            product: Some("NVIDIA-H100-80GB-HBM3".to_owned()),
            memory_bytes: Some(81_559 * MI),
        }]
    );
}

#[test]
fn h100_health_and_taints() {
    let (record, _) = build(&h100_node());
    assert_eq!(record.ready, Some(true));
    assert_eq!(record.pressure, Vec::<String>::new());
    assert_eq!(record.taints, vec![taint("nvidia.com/gpu", None, "NoSchedule")]);
    assert!(!record.unschedulable);
}

// ---------------------------------------------------------------- AMD MI300X

#[test]
fn mi300x_accelerator_from_labeller() {
    let (record, warnings) = build(&mi300x_node());
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(
        record.accelerators,
        vec![AcceleratorResource {
            resource: "amd.com/gpu".to_owned(),
            vendor: "amd".to_owned(),
            count: 8,
            allocatable: 7,
            product: Some("AMD_Instinct_MI300X_OAM".to_owned()),
            memory_bytes: Some(192 * GI),
        }]
    );
}

#[test]
fn mi300x_amounts_and_role() {
    let (record, _) = build(&mi300x_node());
    assert_eq!(record.roles, vec!["worker".to_owned()]);
    assert_eq!(record.capacity.cpu_millicores, Some(256_000));
    assert_eq!(record.capacity.memory_bytes, Some(2_377_021_624 * KI));
    assert_eq!(record.allocatable.ephemeral_storage_bytes, Some(1_699_818_747_462));
    assert_eq!(record.allocatable.pods, Some(110));
    assert_eq!(
        record.allocatable.extended,
        extended(&[("amd.com/gpu", 7), ("hugepages-1Gi", 0), ("hugepages-2Mi", 0)])
    );
}

#[test]
fn mi300x_without_cloud_labels() {
    let (record, _) = build(&mi300x_node());
    assert_eq!(record.instance_type, None);
    assert_eq!(record.zone, None);
    assert_eq!(record.region, None);
}

#[test]
fn amd_beta_labels_as_fallback() {
    let mut node = mi300x_node();
    node.labels.retain(|label| !label.key.starts_with("amd.com/"));
    let (record, _) = build(&node);
    assert_eq!(record.accelerators[0].product.as_deref(), Some("AMD_Instinct_MI300X_OAM"));
    assert_eq!(record.accelerators[0].memory_bytes, Some(192 * GI));
}

#[test]
fn amd_partitions_without_vram() {
    let mut node = mi300x_node();
    node.capacity = pairs(&[("amd.com/cpx_nps4", "64"), ("cpu", "256")]);
    node.allocatable = pairs(&[("amd.com/cpx_nps4", "64"), ("cpu", "256")]);
    let (record, _) = build(&node);
    assert_eq!(
        record.accelerators,
        vec![AcceleratorResource {
            resource: "amd.com/cpx_nps4".to_owned(),
            vendor: "amd".to_owned(),
            count: 64,
            allocatable: 64,
            product: Some("AMD_Instinct_MI300X_OAM".to_owned()),
            memory_bytes: None,
        }]
    );
}

// ---------------------------------------------------------------- control plane

#[test]
fn control_plane_role_and_taint() {
    let (record, warnings) = build(&control_plane_node());
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(record.roles, vec!["control-plane".to_owned()]);
    assert_eq!(record.taints, vec![taint("node-role.kubernetes.io/control-plane", None, "NoSchedule")]);
    assert_eq!(record.ready, Some(true));
    assert_eq!(record.architecture.as_deref(), Some("arm64"));
    assert_eq!(record.accelerators, Vec::new());
}

#[test]
fn control_plane_hugepage_sizes_are_extended() {
    let (record, _) = build(&control_plane_node());
    assert_eq!(
        record.capacity.extended,
        extended(&[("hugepages-1Gi", 0), ("hugepages-2Mi", 0), ("hugepages-32Mi", 0), ("hugepages-64Ki", 0)])
    );
    assert_eq!(record.allocatable.memory_bytes, Some(16_229_188 * KI));
    assert_eq!(record.allocatable.ephemeral_storage_bytes, Some(93_478_772_582));
}

#[test]
fn legacy_role_label_merges_with_new_ones() {
    let mut node = bare_node("kops-master");
    node.labels = pairs(&[
        ("kubernetes.io/role", "master"),
        ("node-role.kubernetes.io/master", ""),
        ("node-role.kubernetes.io/control-plane", ""),
        ("node-role.kubernetes.io/", ""),
    ]);
    let (record, _) = build(&node);
    assert_eq!(record.roles, vec!["control-plane".to_owned(), "master".to_owned()]);
}

// ---------------------------------------------------------------- unhealthy nodes

#[test]
fn cordoned_unreachable_node_is_not_ready() {
    let (record, warnings) = build(&cordoned_unreachable_node());
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(record.ready, Some(false));
    assert_eq!(record.pressure, Vec::<String>::new(), "Unknown is not True, so it is no pressure");
    assert!(record.unschedulable);
    assert_eq!(record.taints.len(), 3);
    assert_eq!(record.taints[0], taint("node.kubernetes.io/unreachable", None, "NoExecute"));
    assert_eq!(record.taints[2], taint("node.kubernetes.io/unschedulable", None, "NoSchedule"));
}

#[test]
fn cordoned_node_keeps_amounts() {
    let (record, _) = build(&cordoned_unreachable_node());
    assert_eq!(record.allocatable.cpu_millicores, Some(15_800));
    assert_eq!(record.capacity.memory_bytes, Some(65_842_500 * KI));
    assert_eq!(record.architecture, None);
    assert_eq!(record.kubelet_version, None);
}

#[test]
fn pressure_conditions_sorted() {
    let mut node = bare_node("worker-9");
    node.conditions = vec![
        condition("Ready", "False"),
        condition("PIDPressure", "False"),
        condition("NetworkUnavailable", "True"),
        condition("MemoryPressure", "True"),
        condition("DiskPressure", "True"),
        condition("KernelDeadlock", "Unknown"),
    ];
    let (record, _) = build(&node);
    assert_eq!(record.ready, Some(false));
    assert_eq!(
        record.pressure,
        vec!["DiskPressure".to_owned(), "MemoryPressure".to_owned(), "NetworkUnavailable".to_owned()]
    );
}

#[test]
fn ready_absent_is_none() {
    let mut node = bare_node("joining");
    node.conditions = vec![condition("MemoryPressure", "False")];
    let (record, _) = build(&node);
    assert_eq!(record.ready, None);
}

// ---------------------------------------------------------------- other accelerators

#[test]
fn unknown_extended_resources_stay_extended() {
    let mut node = bare_node("edge-1");
    node.capacity = pairs(&[
        ("squat.ai/video", "1500m"),
        ("example.com/dongle", "3"),
        ("hugepages-2Mi", "4Gi"),
        ("smarter-devices/fuse", "20"),
        ("devices.kubevirt.io/kvm", "1k"),
        ("gpu.intel.com/i915_monitoring", "1"),
        ("gpu.intel.com/millicores", "2000"),
        ("nvidia.com/gpu", "0"),
    ]);
    let (record, warnings) = build(&node);
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(
        record.capacity.extended,
        extended(&[
            ("devices.kubevirt.io/kvm", 1000),
            ("example.com/dongle", 3),
            ("gpu.intel.com/i915_monitoring", 1),
            ("gpu.intel.com/millicores", 2000),
            ("hugepages-2Mi", 4 * GI),
            ("nvidia.com/gpu", 0),
            ("smarter-devices/fuse", 20),
            ("squat.ai/video", 1),
        ])
    );
    assert_eq!(record.accelerators, Vec::new(), "a zero GPU count and non-device resources make no accelerator");
}

#[test]
fn gke_accelerator_label_names_product() {
    let mut node = bare_node("gke-a100");
    node.labels = pairs(&[("cloud.google.com/gke-accelerator", "nvidia-tesla-a100")]);
    node.capacity = pairs(&[("nvidia.com/gpu", "2")]);
    let (record, _) = build(&node);
    assert_eq!(record.accelerators.len(), 1);
    assert_eq!(record.accelerators[0].product.as_deref(), Some("nvidia-tesla-a100"));
    assert_eq!(record.accelerators[0].memory_bytes, None);
    assert_eq!(record.accelerators[0].allocatable, 0, "allocatable is 0 when the resource is not allocatable");
}

#[test]
fn mig_mixed_strategy_devices() {
    let mut node = bare_node("dgx-a100-2");
    node.labels = pairs(&[
        ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
        ("nvidia.com/gpu.memory", "81920"),
        ("nvidia.com/mig-1g.10gb.product", "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"),
        ("nvidia.com/mig-1g.10gb.memory", "9728"),
        ("nvidia.com/mig-1g.10gb.count", "7"),
        ("nvidia.com/mig-3g.40gb.product", "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb"),
        ("nvidia.com/mig-3g.40gb.memory", "40192"),
        ("nvidia.com/mig.strategy", "mixed"),
    ]);
    node.capacity = pairs(&[("nvidia.com/mig-3g.40gb", "2"), ("nvidia.com/gpu", "0"), ("nvidia.com/mig-1g.10gb", "7")]);
    node.allocatable = node.capacity.clone();
    let (record, _) = build(&node);
    let mig = |resource: &str, count, product: &str, mebibytes| AcceleratorResource {
        resource: resource.to_owned(),
        vendor: "nvidia".to_owned(),
        count,
        allocatable: count,
        product: Some(product.to_owned()),
        memory_bytes: Some(mebibytes * MI),
    };
    assert_eq!(
        record.accelerators,
        vec![
            mig("nvidia.com/mig-1g.10gb", 7, "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", 9728),
            mig("nvidia.com/mig-3g.40gb", 2, "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb", 40192),
        ]
    );
}

#[test]
fn shared_gpu_uses_full_gpu_labels() {
    let mut node = bare_node("timeslice-1");
    node.labels = pairs(&[("nvidia.com/gpu.product", "Tesla-T4"), ("nvidia.com/gpu.memory", "15360")]);
    node.capacity = pairs(&[("nvidia.com/gpu.shared", "4")]);
    let (record, _) = build(&node);
    assert_eq!(record.accelerators[0].resource, "nvidia.com/gpu.shared");
    assert_eq!(record.accelerators[0].product.as_deref(), Some("Tesla-T4"));
    assert_eq!(record.accelerators[0].memory_bytes, Some(15_360 * MI));
}

#[test]
fn trainium_devices_and_cores() {
    let mut node = bare_node("ip-10-0-40-2.ec2.internal");
    node.labels = pairs(&[("node.kubernetes.io/instance-type", "trn1.32xlarge")]);
    node.capacity = pairs(&[("aws.amazon.com/neuron", "16"), ("aws.amazon.com/neuroncore", "32"), ("cpu", "128")]);
    node.allocatable = node.capacity.clone();
    let (record, _) = build(&node);
    let resources: Vec<(&str, &str, u64)> = record
        .accelerators
        .iter()
        .map(|accelerator| (accelerator.resource.as_str(), accelerator.vendor.as_str(), accelerator.count))
        .collect();
    assert_eq!(
        resources,
        vec![("aws.amazon.com/neuron", "aws.amazon.com", 16), ("aws.amazon.com/neuroncore", "aws.amazon.com", 32)]
    );
    assert!(record.accelerators.iter().all(|accelerator| accelerator.product.is_none()));
}

#[test]
fn tpu_product_from_gke_label() {
    let mut node = bare_node("gke-tpu-1");
    node.labels = pairs(&[
        ("cloud.google.com/gke-tpu-accelerator", "tpu-v5-lite-podslice"),
        ("cloud.google.com/gke-tpu-topology", "2x2"),
    ]);
    node.capacity = pairs(&[("google.com/tpu", "4")]);
    node.allocatable = pairs(&[("google.com/tpu", "4")]);
    let (record, _) = build(&node);
    assert_eq!(
        record.accelerators,
        vec![AcceleratorResource {
            resource: "google.com/tpu".to_owned(),
            vendor: "google.com".to_owned(),
            count: 4,
            allocatable: 4,
            product: Some("tpu-v5-lite-podslice".to_owned()),
            memory_bytes: None,
        }]
    );
}

#[test]
fn intel_gpu_and_gaudi() {
    let mut node = bare_node("intel-1");
    node.labels = pairs(&[("gpu.intel.com/product", "Max_1550"), ("gpu.intel.com/memory.max", "137438953472")]);
    node.capacity = pairs(&[("gpu.intel.com/i915", "2"), ("habana.ai/gaudi", "8")]);
    let (record, _) = build(&node);
    assert_eq!(record.accelerators.len(), 2);
    assert_eq!(record.accelerators[0].resource, "gpu.intel.com/i915");
    assert_eq!(record.accelerators[0].vendor, "intel");
    assert_eq!(record.accelerators[0].product.as_deref(), Some("Max_1550"));
    assert_eq!(record.accelerators[0].memory_bytes, None, "memory.max is a node total, not per device");
    assert_eq!(record.accelerators[1].resource, "habana.ai/gaudi");
    assert_eq!(record.accelerators[1].vendor, "intel");
    assert_eq!(record.accelerators[1].product, None);
}

// ---------------------------------------------------------------- malformed input

#[test]
fn malformed_cpu_warns_once() {
    let mut node = bare_node("broken-1");
    node.capacity = pairs(&[("cpu", "4x"), ("memory", "8Gi")]);
    let (record, warnings) = build(&node);
    assert_eq!(record.capacity.cpu_millicores, None);
    assert_eq!(record.capacity.memory_bytes, Some(8 * GI));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("broken-1"), "{}", warnings[0]);
    assert!(warnings[0].contains("capacity cpu"), "{}", warnings[0]);
    assert!(warnings[0].contains("\"4x\""), "{}", warnings[0]);
    assert!(warnings[0].contains("not a valid Kubernetes quantity"), "{}", warnings[0]);
}

#[test]
fn negative_and_overflowing_values_left_out() {
    let mut node = bare_node("broken-2");
    node.capacity = pairs(&[("memory", "-1"), ("nvidia.com/gpu", "9999999999999999999999E"), ("pods", "110")]);
    let (record, warnings) = build(&node);
    assert_eq!(record.capacity.memory_bytes, None);
    assert_eq!(record.capacity.pods, Some(110));
    assert_eq!(record.capacity.extended, Vec::new());
    assert_eq!(record.accelerators, Vec::new());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("capacity memory"), "{}", warnings[0]);
    assert!(warnings[0].contains("negative"), "{}", warnings[0]);
    assert!(warnings[1].contains("capacity nvidia.com/gpu"), "{}", warnings[1]);
    assert!(warnings[1].contains("too large"), "{}", warnings[1]);
}

#[test]
fn malformed_memory_label_warns() {
    let mut node = h100_node();
    for label in &mut node.labels {
        if label.key == "nvidia.com/gpu.memory" {
            label.value = "80GB".to_owned();
        }
    }
    let (record, warnings) = build(&node);
    assert_eq!(record.accelerators[0].memory_bytes, None);
    assert_eq!(record.accelerators[0].product.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("nvidia.com/gpu.memory"), "{}", warnings[0]);
    assert!(warnings[0].contains("\"80GB\""), "{}", warnings[0]);
}

#[test]
fn empty_node_info_fields_are_none() {
    let mut node = bare_node("new-node");
    node.node_info = Some(NodeSystemInfo {
        architecture: String::new(),
        operating_system: " ".to_owned(),
        os_image: String::new(),
        kernel_version: String::new(),
        container_runtime_version: String::new(),
        kubelet_version: "v1.33.0".to_owned(),
    });
    let (record, _) = build(&node);
    assert_eq!(record.architecture, None);
    assert_eq!(record.operating_system, None);
    assert_eq!(record.os_image, None);
    assert_eq!(record.kernel_version, None);
    assert_eq!(record.container_runtime, None);
    assert_eq!(record.kubelet_version.as_deref(), Some("v1.33.0"));
}

#[test]
fn legacy_placement_labels_as_fallback() {
    let mut node = bare_node("old-node");
    node.labels = pairs(&[
        ("beta.kubernetes.io/instance-type", "m5.large"),
        ("failure-domain.beta.kubernetes.io/zone", "eu-west-1b"),
        ("failure-domain.beta.kubernetes.io/region", "eu-west-1"),
        ("topology.kubernetes.io/zone", ""),
    ]);
    let (record, _) = build(&node);
    assert_eq!(record.instance_type.as_deref(), Some("m5.large"));
    assert_eq!(record.zone.as_deref(), Some("eu-west-1b"));
    assert_eq!(record.region.as_deref(), Some("eu-west-1"));
}

#[test]
fn bare_node_maps_to_empty_record() {
    let (record, warnings) = build(&bare_node("empty"));
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(record.uid, "uid-empty");
    assert_eq!(record.capacity.cpu_millicores, None);
    assert_eq!(record.capacity.extended, Vec::new());
    assert_eq!(record.ready, None);
    assert_eq!(record.created, None);
}

// ---------------------------------------------------------------- node lists

#[test]
fn records_keep_input_order() {
    let nodes = vec![mi300x_node(), h100_node(), control_plane_node(), cordoned_unreachable_node()];
    let built = build_node_records(&nodes);
    let names: Vec<&str> = built.records.iter().map(|record| record.name.as_str()).collect();
    assert_eq!(names, vec!["mi300x-07", "ip-10-0-12-34.ec2.internal", "cp-1", "worker-3"]);
    assert_eq!(built.warnings, Vec::<String>::new());
}

#[test]
fn warnings_of_all_nodes_collected() {
    let mut first = bare_node("a");
    first.allocatable = pairs(&[("cpu", "x")]);
    let mut second = bare_node("b");
    second.capacity = pairs(&[("pods", "1.5.5")]);
    let built = build_node_records(&[first, second]);
    assert_eq!(built.records.len(), 2);
    assert_eq!(built.warnings.len(), 2, "{:?}", built.warnings);
    assert!(built.warnings[0].starts_with("node \"a\": allocatable cpu"), "{}", built.warnings[0]);
    assert!(built.warnings[1].starts_with("node \"b\": capacity pods"), "{}", built.warnings[1]);
}
