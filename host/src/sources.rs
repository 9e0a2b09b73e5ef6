//! What the host offers to collectors: read-only views of the host root.
//!
//! By default a collector sees `/proc`, `/sys` and `/etc/os-release` of the
//! host root (`/` on a machine, `/host` in the DaemonSet, a fixture directory
//! in tests) and nothing else.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

/// Directories granted as WASI preopens, relative to the host root.
const GRANTED_DIRS: &[&str] = &["proc", "sys"];

/// os-release(5) locations, in the order the specification gives.
const OS_RELEASE: &[&str] = &["etc/os-release", "usr/lib/os-release"];

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
#[derive(Debug)]
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

    /// Builds the preopens for one collection. A granted directory missing
    /// from the root is left out, so the guest sees "not found", as it would
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

        // WASI preopens are directories, and granting all of /etc would
        // expose far more than os-release. The file is copied into a private
        // directory that is then granted as /etc.
        let staging = match self.read_os_release() {
            Some(text) => {
                let staging = tempfile::Builder::new()
                    .prefix("hw-agent-etc-")
                    .tempdir()
                    .context("failed to create the os-release staging directory")?;
                fs::write(staging.path().join("os-release"), text).context("failed to stage os-release")?;
                preopens.push(Preopen { host: staging.path().to_path_buf(), guest: "/etc".to_owned() });
                Some(staging)
            }
            None => None,
        };

        Ok(FilesystemGrants { preopens, _staging: staging })
    }

    fn read_os_release(&self) -> Option<Vec<u8>> {
        OS_RELEASE.iter().find_map(|relative| {
            let path = resolve_in_root(&self.root, Path::new(relative))?;
            fs::read(path).ok()
        })
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
        assert_eq!(guests, vec!["/proc"]);
    }
}
