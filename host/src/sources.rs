//! What the host offers to collectors: read-only views of the host root.
//!
//! By default a collector can read `/sys`, a snapshot of selected `/proc` files
//! and `/etc/os-release` of the host root (`/` on a machine, `/host` in the
//! DaemonSet, a fixture directory in tests) and nothing else.
//!
//! `/proc` is never granted as a directory: `/proc/self` is the agent itself,
//! and its `mem`, `environ` and `cmdline` would hand a collector the agent's
//! secrets. Only the files in [`PROC_FILES`] are copied into a private
//! directory that is granted as `/proc`.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

/// Directories granted as WASI preopens, relative to the host root.
// NOTE: `/sys` is granted whole. It describes hardware, but a host that
// exposes firmware variables or debugfs there exposes them to collectors.
const GRANTED_DIRS: &[&str] = &["sys"];

/// `/proc` files copied into the collectors' `/proc` snapshot, relative to
/// the host root. A trailing `/*/NAME` entry copies `NAME` from each
/// subdirectory, as for the NVIDIA driver's per-GPU files.
// TODO: let operators grant more /proc files per collector.
const PROC_FILES: &[&str] = &[
    "proc/cpuinfo",
    "proc/meminfo",
    "proc/sys/kernel/hostname",
    "proc/sys/kernel/osrelease",
    "proc/sys/kernel/version",
    "proc/sys/kernel/arch",
    "proc/driver/nvidia/version",
    "proc/driver/nvidia/gpus/*/information",
];

/// Largest `/proc` file copied into the snapshot, in bytes.
const PROC_FILE_MAX_BYTES: u64 = 4 << 20;

/// os-release(5) locations, in the order the specification gives.
const OS_RELEASE: &[&str] = &["etc/os-release", "usr/lib/os-release"];

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

    /// Builds the preopens for one collection. A granted directory missing
    /// from the root is left out, so the guest gets "not found", as it would
    /// on a machine without it.
    pub fn grants(&self) -> anyhow::Result<FilesystemGrants> {
        let mut preopens = Vec::new();
        for dir in GRANTED_DIRS {
            let host = self.root.join(dir);
            if host.is_dir() {
                preopens.push(Preopen { host, guest: format!("/{dir}") });
            } else {
                tracing::debug!(path = %host.display(), "granted directory missing from the host root");
            }
        }

        // WASI preopens are directories. A private staging directory carries
        // the /proc snapshot and os-release, so neither all of /proc nor all
        // of /etc is exposed.
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir()
            .context("failed to create the staging directory for /proc and /etc")?;
        let proc_dir = staging.path().join("proc");
        fs::create_dir_all(&proc_dir).context("failed to create the /proc snapshot")?;
        self.copy_proc_files(staging.path())?;
        preopens.push(Preopen { host: proc_dir, guest: "/proc".to_owned() });

        if let Some(text) = self.read_os_release() {
            let etc = staging.path().join("etc");
            fs::create_dir_all(&etc).context("failed to create the os-release staging directory")?;
            fs::write(etc.join("os-release"), text).context("failed to stage os-release")?;
            preopens.push(Preopen { host: etc, guest: "/etc".to_owned() });
        }
        let staging = Some(staging);

        Ok(FilesystemGrants { preopens, _staging: staging })
    }

    /// Copies the allowlisted `/proc` files that exist below the root into
    /// `staging`, keeping their relative paths.
    fn copy_proc_files(&self, staging: &Path) -> anyhow::Result<()> {
        for pattern in PROC_FILES {
            let sources: Vec<PathBuf> = match pattern.split_once("/*/") {
                Some((parent, name)) => fs::read_dir(self.root.join(parent))
                    .map(|entries| {
                        entries
                            .filter_map(Result::ok)
                            .map(|entry| Path::new(parent).join(entry.file_name()).join(name))
                            .collect()
                    })
                    .unwrap_or_default(),
                None => vec![PathBuf::from(pattern)],
            };
            for relative in sources {
                let Some(contents) = self.read_regular_file(&relative) else { continue };
                let target = staging.join(&relative);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).with_context(|| format!("failed to stage {}", relative.display()))?;
                }
                fs::write(&target, contents).with_context(|| format!("failed to stage {}", relative.display()))?;
            }
        }
        Ok(())
    }

    fn read_os_release(&self) -> Option<Vec<u8>> {
        OS_RELEASE.iter().find_map(|relative| self.read_regular_file(Path::new(relative)))
    }

    /// Reads a file below the root, bounded in size, or `None` when it is
    /// missing, unreadable or not a regular file. A FIFO or device would
    /// block or stream forever.
    fn read_regular_file(&self, relative: &Path) -> Option<Vec<u8>> {
        let path = resolve_in_root(&self.root, relative)?;
        fs::metadata(&path).ok().filter(fs::Metadata::is_file)?;
        read_bounded(&path, PROC_FILE_MAX_BYTES).ok()
    }
}

/// Resolves `relative` below `root`, following symlinks as if `root` were
/// `/`: an absolute target such as `/usr/lib/os-release` is taken relative
/// to the root, and nothing may resolve outside it. Returns `None` for a
/// missing file, a loop or an escape.
pub fn resolve_in_root(root: &Path, relative: &Path) -> Option<PathBuf> {
    let mut current = normalize(relative)?;
    for _ in 0..MAX_SYMLINK_HOPS {
        let path = root.join(&current);
        let metadata = fs::symlink_metadata(&path).ok()?;
        if !metadata.file_type().is_symlink() {
            return Some(path);
        }
        let target = fs::read_link(&path).ok()?;
        current = if target.is_absolute() {
            normalize(target.strip_prefix("/").ok()?)?
        } else {
            normalize(&current.parent().unwrap_or(Path::new("")).join(target))?
        };
    }
    None
}

/// Reads at most `max_bytes` of a file. /proc files report size 0, so the
/// length is only known by reading.
fn read_bounded(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut contents = Vec::new();
    fs::File::open(path)?.take(max_bytes).read_to_end(&mut contents)?;
    Ok(contents)
}

/// Removes `.` and `..` lexically; `None` when `..` would climb above the start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
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

    #[test]
    fn grants_skip_missing_directories() {
        let root = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(root.path().join("proc")).expect("create proc");
        let grants = HostRoot::new(root.path()).expect("root").grants().expect("grants");
        let guests: Vec<&str> = grants.preopens.iter().map(|preopen| preopen.guest.as_str()).collect();
        assert_eq!(guests, vec!["/proc"], "no /sys and no os-release in this root");
    }

    #[test]
    fn proc_snapshot_has_only_allowlisted_files() {
        let root = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(root.path().join("proc/self")).expect("create proc/self");
        fs::create_dir_all(root.path().join("proc/driver/nvidia/gpus/0000:17:00.0")).expect("create nvidia dirs");
        fs::write(root.path().join("proc/cpuinfo"), "processor : 0\n").expect("write cpuinfo");
        fs::write(root.path().join("proc/self/environ"), "AIOD_CLIENT_SECRET=x").expect("write environ");
        fs::write(root.path().join("proc/driver/nvidia/gpus/0000:17:00.0/information"), "Model: X\n")
            .expect("write info");

        let grants = HostRoot::new(root.path()).expect("root").grants().expect("grants");
        let proc = &grants.preopens.iter().find(|preopen| preopen.guest == "/proc").expect("/proc grant").host;
        assert!(proc.join("cpuinfo").is_file());
        assert!(proc.join("driver/nvidia/gpus/0000:17:00.0/information").is_file());
        assert!(!proc.join("self").exists(), "/proc/self must never reach a collector");
    }
}
