//! Guest paths in grants and requests: their normal form, the paths no
//! collector may read, and containment.

/// Paths that no policy may grant and no collector may read, with the
/// reason. A grant of an ancestor (such as `/var`) is rejected too.
const FORBIDDEN: &[(&str, &str)] = &[
    ("/var/run/secrets", "it holds the agent's service-account token"),
    ("/run/secrets", "it holds the agent's service-account token"),
    ("/var/lib/kubelet", "it holds every pod's service-account tokens and volumes"),
    ("/etc/kubernetes", "it holds the node's kubeconfigs and keys"),
    ("/dev", "device nodes are not hardware descriptions; read /sys instead"),
    ("/proc/self", "it is the agent's own process"),
    ("/proc/thread-self", "it is the agent's own process"),
    ("/proc/kcore", "it exposes kernel memory"),
    ("/proc/kmsg", "it is the kernel log, which blocks readers"),
    ("/proc/kallsyms", "it exposes kernel addresses"),
    ("/proc/keys", "it lists kernel keys"),
    ("/proc/key-users", "it lists kernel keys"),
    ("/proc/sysrq-trigger", "it controls the kernel"),
    ("/proc/kpagecount", "it exposes physical memory"),
    ("/proc/kpageflags", "it exposes physical memory"),
    ("/proc/kpagecgroup", "it exposes physical memory"),
];

/// Returns `path` without a trailing slash, or why it is not an absolute,
/// normal path: `.` and `..` components, empty components and NUL are
/// rejected rather than resolved, so a grant means what it spells.
pub fn normalize_guest_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("use an absolute path such as /sys".to_owned());
    }
    if path.contains('\0') {
        return Err("it contains a NUL character".to_owned());
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("the whole root cannot be granted; grant the directories the collector reads".to_owned());
    }
    for component in trimmed[1..].split('/') {
        match component {
            "" => return Err("it contains an empty component (`//`)".to_owned()),
            "." | ".." => return Err(format!("it contains `{component}`; write the path without it")),
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

/// Returns why `path` may never be read, when it is a forbidden path, lies
/// below one, or is a process directory of `/proc`.
pub fn forbidden_reason(path: &str) -> Option<&'static str> {
    if let Some(reason) = FORBIDDEN.iter().find(|(forbidden, _)| covers(forbidden, path)).map(|(_, reason)| *reason) {
        return Some(reason);
    }
    let process = path.strip_prefix("/proc/").and_then(|rest| rest.split('/').next());
    if process.is_some_and(|name| !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_digit())) {
        return Some("it is a process directory, which can be the agent's own");
    }
    None
}

/// Returns why a policy cannot grant `path`: it is forbidden, or it covers
/// a forbidden path outside `/proc`. `/proc` itself may be granted because
/// collectors get copies of single `/proc` files, never the process
/// directories.
pub fn grant_conflict(path: &str) -> Option<String> {
    if let Some(reason) = forbidden_reason(path) {
        return Some(reason.to_owned());
    }
    FORBIDDEN.iter().find(|(forbidden, _)| !forbidden.starts_with("/proc/") && covers(path, forbidden)).map(
        |(forbidden, reason)| {
            format!("it contains {forbidden}, which no collector may read because {reason}; grant narrower paths")
        },
    )
}

/// Returns whether `outer` is `inner` or one of its ancestors, compared by whole
/// components (`/sys` covers `/sys/class` but not `/sysfs`).
pub fn covers(outer: &str, inner: &str) -> bool {
    inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
}

/// Drops paths that another path in the sorted list already covers.
pub fn outermost(sorted: Vec<String>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for path in sorted {
        if !kept.iter().any(|outer| covers(outer, &path)) {
            kept.push(path);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_form() {
        assert_eq!(normalize_guest_path("/sys/"), Ok("/sys".to_owned()));
        assert!(normalize_guest_path("/").is_err());
        assert!(normalize_guest_path("sys").is_err());
        assert!(normalize_guest_path("/sys/../etc").is_err());
        assert!(normalize_guest_path("/sys/./class").is_err());
        assert!(normalize_guest_path("/sys//class").is_err());
    }

    #[test]
    fn containment_is_by_component() {
        assert!(covers("/sys", "/sys/class/net"));
        assert!(covers("/sys", "/sys"));
        assert!(!covers("/sys", "/sysfs"));
        assert_eq!(outermost(vec!["/sys".into(), "/sys/class".into(), "/sysfs".into()]), vec!["/sys", "/sysfs"]);
    }

    #[test]
    fn forbidden_paths() {
        assert!(forbidden_reason("/proc/123/environ").is_some());
        assert!(forbidden_reason("/proc/self").is_some());
        assert!(forbidden_reason("/var/run/secrets/kubernetes.io/serviceaccount/token").is_some());
        assert!(forbidden_reason("/proc/cpuinfo").is_none());
        assert!(forbidden_reason("/proc/sys/kernel/hostname").is_none());
        assert!(grant_conflict("/proc").is_none());
        assert!(grant_conflict("/var").is_some());
        assert!(grant_conflict("/etc").is_some());
        assert!(grant_conflict("/etc/os-release").is_none());
    }
}
