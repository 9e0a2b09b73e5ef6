//! What the host offers to collectors: read-only views of the host root.
//!
//! A collector can read only the paths its policy grant lists, below the host
//! root (`/` on a machine, `/host` in the DaemonSet, a fixture directory in
//! tests). A granted directory becomes a WASI preopen, so cap-std rejects
//! every `..` or symlink that would leave it. A granted file, and every
//! `/proc` path, is copied into a private staging directory instead: WASI
//! preopens are directories, and `/proc` as a directory would include
//! `/proc/self`, whose `mem`, `environ` and `cmdline` hold the agent's secrets.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

use crate::policy::{forbidden_reason, grant_conflict};

/// Largest file copied into the staging directory, in bytes.
const STAGED_FILE_MAX_BYTES: u64 = 4 << 20;

/// Most files copied from one granted `/proc` directory, and how deep the
/// copy descends. `/proc/driver/nvidia` has a few files per GPU.
const STAGED_DIR_MAX_FILES: usize = 512;
const STAGED_DIR_MAX_DEPTH: usize = 6;

/// Name prefix of the per-collection staging directories in the temp dir.
const STAGING_PREFIX: &str = "hw-agent-grants-";

/// Age after which a staging directory is certainly left over: one exists
/// only for a single collection, which the run-time limit bounds to minutes.
const STALE_STAGING_AGE: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Removes staging directories that an agent killed with SIGKILL left in the
/// temp dir. In a pod that dir is an emptyDir that outlives restarts, so
/// without this the leftovers would pile up until it is full.
pub fn remove_stale_staging() {
    remove_stale_staging_in(&std::env::temp_dir(), STALE_STAGING_AGE);
}

fn remove_stale_staging_in(temp_dir: &Path, max_age: std::time::Duration) {
    let Ok(entries) = fs::read_dir(temp_dir) else { return };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX)
            && entry.file_type().is_ok_and(|kind| kind.is_dir())
            && entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > max_age));
        if stale {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::debug!(path = %entry.path().display(), "removed a stale staging directory"),
                Err(error) => {
                    tracing::debug!(path = %entry.path().display(), %error, "failed to remove a stale staging directory")
                }
            }
        }
    }
}

/// How many symlinks to follow when resolving a path inside the host root.
const MAX_SYMLINK_HOPS: usize = 16;

/// One directory the guest may read: `host` is mapped to `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
}

/// The filesystem grants for one collection. Owns the staging directory that
/// carries `/etc/os-release`, so the grants must outlive the guest store.
/// The default grants nothing.
#[derive(Debug, Default)]
pub struct FilesystemGrants {
    pub preopens: Vec<Preopen>,
    _staging: Option<tempfile::TempDir>,
}

/// The host filesystem root that collectors read from.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        anyhow::ensure!(
            root.is_dir(),
            "host root {} is not a directory; pass --host-root with the directory that holds proc/ and sys/",
            root.display()
        );
        Ok(Self { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Builds the filesystem grants for one call from the granted guest
    /// paths (absolute, normalised, none inside another). A path missing
    /// from the root is left out, so the guest gets "not found", as it would
    /// on a machine without it.
    pub fn grants(&self, read: &[String]) -> anyhow::Result<FilesystemGrants> {
        let mut preopens = Vec::new();
        let mut staging: Option<tempfile::TempDir> = None;
        for guest in read {
            let relative = Path::new(guest.trim_start_matches('/'));
            let Some(host) = self.resolve_granted(guest) else {
                tracing::debug!(path = %guest, "granted path missing from the host root, leaving it, or forbidden");
                continue;
            };
            let in_proc = host.starts_with(self.root.join("proc"));
            if !in_proc && host.is_dir() {
                preopens.push(Preopen { host, guest: guest.clone() });
                continue;
            }
            let staging = match &mut staging {
                Some(staging) => staging,
                None => staging.insert(
                    tempfile::Builder::new()
                        .prefix(STAGING_PREFIX)
                        .tempdir()
                        .context("failed to create the staging directory for granted files")?,
                ),
            };
            let target = staging.path().join(relative);
            if host.is_dir() {
                let mut budget = STAGED_DIR_MAX_FILES;
                copy_tree(&host, &target, guest, STAGED_DIR_MAX_DEPTH, &mut budget)?;
            } else {
                stage_file(&host, &target, guest)?;
            }
        }

        // Each top-level directory of the staging tree becomes one preopen.
        if let Some(staging) = &staging {
            let mut tops: Vec<_> = fs::read_dir(staging.path())
                .context("failed to list the staging directory")?
                .filter_map(Result::ok)
                .map(|entry| entry.file_name())
                .collect();
            tops.sort();
            for top in tops {
                preopens
                    .push(Preopen { host: staging.path().join(&top), guest: format!("/{}", top.to_string_lossy()) });
            }
        }
        Ok(FilesystemGrants { preopens, _staging: staging })
    }

    /// Resolves a granted guest path in the root. Returns `None` when it is
    /// missing or resolves to a path no policy could grant. A symlink such as
    /// `/proc/mounts -> self/mounts` leads into the agent's own process
    /// directory, and a root whose `sys` links to `/` or `/var` would expose
    /// everything below it, secrets included. `/etc/os-release` falls back to
    /// `/usr/lib/os-release`, as os-release(5) specifies.
    fn resolve_granted(&self, guest: &str) -> Option<PathBuf> {
        let mut candidates = vec![guest];
        if guest == "/etc/os-release" {
            candidates.push("/usr/lib/os-release");
        }
        candidates.into_iter().find_map(|candidate| {
            let host = resolve_in_root(&self.root, Path::new(candidate.trim_start_matches('/')))?;
            let relative = host.strip_prefix(&self.root).ok()?;
            let resolved = format!("/{}", relative.to_string_lossy());
            if resolved == "/" || resolved == "/proc" || grant_conflict(&resolved).is_some() {
                return None;
            }
            host.exists().then_some(host)
        })
    }
}

/// Copies one regular file, bounded in size. A FIFO or device would block
/// or stream forever, so anything else is skipped.
fn stage_file(host: &Path, target: &Path, guest: &str) -> anyhow::Result<()> {
    if !fs::metadata(host).is_ok_and(|metadata| metadata.is_file()) {
        tracing::debug!(path = %guest, "granted path is not a regular file or directory; skipped");
        return Ok(());
    }
    let Ok(contents) = read_bounded(host, STAGED_FILE_MAX_BYTES) else {
        tracing::debug!(path = %guest, "granted file is unreadable; skipped");
        return Ok(());
    };
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).with_context(|| format!("failed to stage {guest}"))?;
    }
    fs::write(target, contents).with_context(|| format!("failed to stage {guest}"))
}

/// Copies the regular files below a directory, without following symlinks,
/// at most `depth` levels down and `budget` files in all.
fn copy_tree(host: &Path, target: &Path, guest: &str, depth: usize, budget: &mut usize) -> anyhow::Result<()> {
    fs::create_dir_all(target).with_context(|| format!("failed to stage {guest}"))?;
    let Ok(entries) = fs::read_dir(host) else { return Ok(()) };
    for entry in entries.filter_map(Result::ok) {
        let Ok(kind) = entry.file_type() else { continue };
        let name = entry.file_name();
        let child_guest = format!("{guest}/{}", name.to_string_lossy());
        if forbidden_reason(&child_guest).is_some() {
            continue;
        }
        if kind.is_dir() && depth > 0 {
            copy_tree(&entry.path(), &target.join(&name), &child_guest, depth - 1, budget)?;
        } else if kind.is_file() {
            if *budget == 0 {
                tracing::debug!(path = %guest, limit = STAGED_DIR_MAX_FILES, "staging file limit reached");
                return Ok(());
            }
            *budget -= 1;
            stage_file(&entry.path(), &target.join(&name), &child_guest)?;
        }
    }
    Ok(())
}

/// Resolves `relative` below `root` one component at a time, following
/// symlinks as if `root` were `/`: an absolute target such as
/// `/usr/lib/os-release` is taken relative to the root, and nothing may
/// resolve outside it. Returns `None` for a missing file, a loop or an escape.
pub fn resolve_in_root(root: &Path, relative: &Path) -> Option<PathBuf> {
    let mut pending: VecDeque<OsString> = components(relative)?;
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if !resolved.pop() {
                return None;
            }
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        let metadata = fs::symlink_metadata(&candidate).ok()?;
        if !metadata.file_type().is_symlink() {
            resolved.push(&part);
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return None;
        }
        let target = fs::read_link(&candidate).ok()?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        let mut expanded = components(&target)?;
        expanded.extend(pending);
        pending = expanded;
    }
    Some(root.join(resolved))
}

/// Splits a path into its normal and `..` components.
fn components(path: &Path) -> Option<VecDeque<OsString>> {
    let mut parts = VecDeque::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push_back(part.to_owned()),
            Component::ParentDir => parts.push_back(OsString::from("..")),
            Component::CurDir | Component::RootDir => {}
            Component::Prefix(_) => return None,
        }
    }
    Some(parts)
}

/// Reads at most `max_bytes` of a file. /proc files report size 0, so the
/// length is only known by reading.
fn read_bounded(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut contents = Vec::new();
    fs::File::open(path)?.take(max_bytes).read_to_end(&mut contents)?;
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_staging_directories_are_removed() {
        let temp = tempfile::tempdir().expect("temp dir");
        let stale = temp.path().join(format!("{STAGING_PREFIX}old"));
        let other = temp.path().join("someone-else");
        fs::create_dir_all(stale.join("proc")).expect("create");
        fs::create_dir_all(&other).expect("create");
        remove_stale_staging_in(temp.path(), std::time::Duration::from_secs(3_600));
        assert!(stale.exists(), "a fresh staging directory may belong to a running collection");
        std::thread::sleep(std::time::Duration::from_millis(20));
        remove_stale_staging_in(temp.path(), std::time::Duration::from_millis(10));
        assert!(!stale.exists(), "an old staging directory is removed");
        assert!(other.exists(), "other directories are left alone");
    }

    #[test]
    fn absolute_symlink_resolves_inside_root() {
        let root = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(root.path().join("etc")).expect("create etc");
        fs::create_dir_all(root.path().join("usr/lib")).expect("create usr/lib");
        fs::write(root.path().join("usr/lib/os-release"), "ID=test\n").expect("write os-release");
        std::os::unix::fs::symlink("/usr/lib/os-release", root.path().join("etc/os-release")).expect("symlink");

        let resolved = resolve_in_root(root.path(), Path::new("etc/os-release"));
        assert_eq!(resolved, Some(root.path().join("usr/lib/os-release")));
    }

    #[test]
    fn escaping_symlink_is_refused() {
        let root = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(root.path().join("etc")).expect("create etc");
        std::os::unix::fs::symlink("../../../../etc/passwd", root.path().join("etc/os-release")).expect("symlink");

        assert_eq!(resolve_in_root(root.path(), Path::new("etc/os-release")), None);
    }

    fn granted(read: &[&str]) -> Vec<String> {
        read.iter().map(|path| (*path).to_owned()).collect()
    }

    #[test]
    fn grant_linked_to_root_or_secrets_is_dropped() {
        for target in [".", "..", "var", "etc"] {
            let root = tempfile::tempdir().expect("temporary directory");
            fs::create_dir_all(root.path().join("var/run/secrets")).expect("create secrets");
            fs::create_dir_all(root.path().join("etc/kubernetes")).expect("create kubernetes");
            std::os::unix::fs::symlink(target, root.path().join("sys")).expect("symlink");
            let grants = HostRoot::new(root.path()).expect("root").grants(&granted(&["/sys"])).expect("grants");
            assert!(grants.preopens.is_empty(), "sys -> {target} must not be granted");
        }
    }

    #[test]
    fn grants_skip_missing_paths() {
        let root = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(root.path().join("proc")).expect("create proc");
        fs::write(root.path().join("proc/cpuinfo"), "processor : 0\n").expect("write cpuinfo");
        let grants = HostRoot::new(root.path())
            .expect("root")
            .grants(&granted(&["/etc/os-release", "/proc/cpuinfo", "/sys"]))
            .expect("grants");
        let guests: Vec<&str> = grants.preopens.iter().map(|preopen| preopen.guest.as_str()).collect();
        assert_eq!(guests, vec!["/proc"], "no /sys and no os-release in this root");
    }

    #[test]
    fn proc_grants_copy_only_requested_files() {
        let root = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(root.path().join("proc/self")).expect("create proc/self");
        fs::create_dir_all(root.path().join("proc/driver/nvidia/gpus/0000:17:00.0")).expect("create nvidia dirs");
        fs::write(root.path().join("proc/cpuinfo"), "processor : 0\n").expect("write cpuinfo");
        fs::write(root.path().join("proc/meminfo"), "MemTotal: 1 kB\n").expect("write meminfo");
        fs::write(root.path().join("proc/self/environ"), "AIOD_CLIENT_SECRET=x").expect("write environ");
        std::os::unix::fs::symlink("self/environ", root.path().join("proc/environ-link")).expect("symlink");
        fs::write(root.path().join("proc/driver/nvidia/gpus/0000:17:00.0/information"), "Model: X\n")
            .expect("write info");

        let grants = HostRoot::new(root.path())
            .expect("root")
            .grants(&granted(&["/proc/cpuinfo", "/proc/driver/nvidia", "/proc/environ-link"]))
            .expect("grants");
        let proc = &grants.preopens.iter().find(|preopen| preopen.guest == "/proc").expect("/proc grant").host;
        assert!(proc.join("cpuinfo").is_file());
        assert!(proc.join("driver/nvidia/gpus/0000:17:00.0/information").is_file());
        assert!(!proc.join("meminfo").exists(), "only requested files are copied");
        assert!(!proc.join("self").exists(), "/proc/self must never reach a collector");
        assert!(!proc.join("environ-link").exists(), "a link into /proc/self is not followed");
    }

    #[test]
    fn directory_grant_is_a_preopen() {
        let root = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(root.path().join("sys/class/net")).expect("create sys");
        fs::create_dir_all(root.path().join("etc")).expect("create etc");
        fs::write(root.path().join("etc/os-release"), "ID=test\n").expect("write os-release");
        let grants = HostRoot::new(root.path())
            .expect("root")
            .grants(&granted(&["/etc/os-release", "/sys/class"]))
            .expect("grants");
        let sys = grants.preopens.iter().find(|preopen| preopen.guest == "/sys/class").expect("/sys/class grant");
        assert_eq!(sys.host, root.path().join("sys/class"));
        let etc = grants.preopens.iter().find(|preopen| preopen.guest == "/etc").expect("/etc grant");
        assert_eq!(fs::read_dir(&etc.host).expect("staged etc").count(), 1, "only os-release is staged");
    }

    #[test]
    fn intermediate_symlink_cannot_leave_root() {
        let root = tempfile::tempdir().expect("temporary directory");
        let outside = tempfile::tempdir().expect("outside directory");
        fs::write(outside.path().join("secret"), "leak").expect("write secret");
        fs::create_dir_all(root.path().join("sys")).expect("create sys");
        std::os::unix::fs::symlink(outside.path(), root.path().join("sys/escape")).expect("symlink");
        assert_eq!(resolve_in_root(root.path(), Path::new("sys/escape/secret")), None);
        let grants =
            HostRoot::new(root.path()).expect("root").grants(&granted(&["/sys/escape/secret"])).expect("grants");
        assert!(grants.preopens.is_empty());
    }
}
