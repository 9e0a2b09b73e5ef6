//! Guest-side support shared by the built-in collector components.
//!
//! This is the one place that runs `wit_bindgen::generate!` for the
//! `collector` world. Each collector crate implements [`Guest`] and exports it
//! with [`export_collector!`]. The parsers in those crates take a [`Root`], so
//! the same code reads `/` inside the sandbox and a fixture directory in
//! native unit tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Generated bindings. They sit in a module of their own because the export
/// macro of a world with plain function exports cannot be re-exported from
/// the crate root it is generated in.
pub mod bindings {
    wit_bindgen::generate!({
        world: "collector",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_collector",
        default_bindings_module: "hw_collector_guest::bindings",
    });
}

pub use bindings::Guest;
pub use bindings::aiod::hw_agent::logging::{self, Level};
pub use bindings::aiod::hw_agent::types::*;

/// The filesystem root a collector reads from: `/` in the sandbox, where the
/// host maps its grants, or a fixture directory in tests.
#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
}

impl Root {
    /// Returns the root the host grants inside the sandbox.
    pub fn sandbox() -> Self {
        Self::at("/")
    }

    pub fn at(base: impl Into<PathBuf>) -> Self {
        Self { base: base.into() }
    }

    /// Maps an absolute guest path such as `/sys/block` below the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.base.join(absolute.trim_start_matches('/'))
    }

    /// Reads a file as text, trimmed of surrounding whitespace.
    pub fn read(&self, absolute: impl AsRef<Path>) -> io::Result<String> {
        let path = self.resolve(absolute.as_ref());
        fs::read_to_string(path).map(|text| text.trim().to_owned())
    }

    /// Reads a file as text, or `None` when it is missing, unreadable or
    /// empty. Most sysfs attributes are optional, so this is the common case.
    pub fn read_opt(&self, absolute: impl AsRef<Path>) -> Option<String> {
        self.read(absolute).ok().filter(|text| !text.is_empty())
    }

    /// Reads a file and parses its trimmed content.
    pub fn parse<T: std::str::FromStr>(&self, absolute: impl AsRef<Path>) -> Option<T> {
        self.read_opt(absolute)?.parse().ok()
    }

    /// Lists the entry names of a directory, sorted, or an empty list when it
    /// does not exist.
    pub fn list(&self, absolute: impl AsRef<Path>) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.resolve(absolute.as_ref())) else {
            return Vec::new();
        };
        let mut names: Vec<String> =
            entries.filter_map(Result::ok).filter_map(|entry| entry.file_name().into_string().ok()).collect();
        names.sort();
        names
    }

    /// Returns the last path component of a symlink's target, which is how
    /// sysfs names a device's driver (`device/driver -> ../../bus/pci/drivers/nvidia`).
    pub fn link_name(&self, absolute: impl AsRef<Path>) -> Option<String> {
        let target = fs::read_link(self.resolve(absolute.as_ref())).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// Returns a symlink's target as text, without resolving it.
    pub fn link_target(&self, absolute: impl AsRef<Path>) -> Option<String> {
        let target = fs::read_link(self.resolve(absolute.as_ref())).ok()?;
        Some(target.to_string_lossy().into_owned())
    }

    pub fn exists(&self, absolute: impl AsRef<Path>) -> bool {
        self.resolve(absolute.as_ref()).exists()
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        match path.strip_prefix("/") {
            Ok(relative) => self.base.join(relative),
            Err(_) => path.to_path_buf(),
        }
    }
}

/// Parses a kernel CPU list such as `0-3,8,10-11` into CPU numbers. Returns
/// `None` on malformed input rather than a partial list.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((start, end)) => {
                let start: u32 = start.trim().parse().ok()?;
                let end: u32 = end.trim().parse().ok()?;
                if end < start {
                    return None;
                }
                cpus.extend(start..=end);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// Parses a sysfs hexadecimal attribute such as `0x10de`.
pub fn parse_hex(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// Sends a log record to the host. Outside the sandbox (native unit tests)
/// there is no host, so the record is dropped.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    logging::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
    }

    #[test]
    fn cpu_list_rejects_malformed() {
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a-b"), None);
    }

    #[test]
    fn hex_with_and_without_prefix() {
        assert_eq!(parse_hex("0x10de\n"), Some(0x10de));
        assert_eq!(parse_hex("1002"), Some(0x1002));
        assert_eq!(parse_hex("zz"), None);
    }
}
