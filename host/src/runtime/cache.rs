//! On-disk cache of compiled components, so a warm start skips Cranelift.
//!
//! An entry's file name is the SHA-256 of the component bytes followed by a
//! hash of the engine's compatibility key (wasmtime version, target and
//! compiler settings), so a changed component or a changed engine misses
//! instead of loading a stale artifact.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The directory of compiled components. `None` compiles every time.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    Disabled,
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// Returns the default location: `$XDG_CACHE_HOME/aiod-hw-agent` or its platform
    /// equivalent, `None` when the platform has no cache directory.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|dir| dir.join("aiod-hw-agent").join("components"))
    }

    /// Compiles `bytes`, or loads the compiled form from the cache.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> anyhow::Result<(Component, CacheUse)> {
        let Some(dir) = self.dir.as_ref().filter(|dir| is_private(dir)) else {
            return Ok((Component::new(engine, bytes)?, CacheUse::Disabled));
        };
        let path = dir.join(entry_name(engine, bytes));

        if path.is_file() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, CacheUse::Hit)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "discarding unreadable compiled component");
                    let _ = fs::remove_file(&path);
                }
            }
        }

        let component = Component::new(engine, bytes)?;
        if let Err(error) = store(dir, &path, &component) {
            // A read-only or full disk costs compile time, nothing else.
            tracing::warn!(dir = %dir.display(), error = %format!("{error:#}"), "failed to write the component cache");
        }
        Ok((component, CacheUse::Miss))
    }
}

/// Accepts a cache directory that does not exist yet (it is created
/// owner-only), or that this process's user owns and no group or other user
/// may write. Artifacts in it are run as native code, so a directory another
/// user owns or can write is not used.
// NOTE: an artifact is trusted once it has the right name in a private
// directory. Wasmtime checks its header and engine settings, not that it was
// compiled from the component its name hashes.
fn is_private(dir: &Path) -> bool {
    let Ok(metadata) = fs::metadata(dir) else {
        return true;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        use std::os::unix::fs::PermissionsExt as _;
        if metadata.permissions().mode() & 0o022 != 0 {
            tracing::warn!(dir = %dir.display(), "component cache directory is writable by group or others; compiling without the cache");
            return false;
        }
        let user = rustix::process::getuid().as_raw();
        if metadata.uid() != user {
            tracing::warn!(dir = %dir.display(), owner = metadata.uid(), user, "component cache directory belongs to another user; compiling without the cache");
            return false;
        }
    }
    metadata.is_dir()
}

fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
    let content = hex::encode(Sha256::digest(bytes));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{content}-{:016x}.cwasm", hasher.finish())
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be a wasmtime artifact.
    // Only this process writes the cache directory, which is created
    // owner-only, and wasmtime still checks the header and engine settings.
    unsafe { Component::deserialize_file(engine, path) }.map_err(anyhow::Error::from)
}

fn store(dir: &Path, path: &Path, component: &Component) -> anyhow::Result<()> {
    create_private_dir(dir)?;
    let bytes = component.serialize()?;
    // Write then rename, so a concurrent reader sees a whole file or none.
    let mut file = tempfile::NamedTempFile::new_in(dir).context("failed to create a temporary file")?;
    file.write_all(&bytes).context("failed to write the compiled component")?;
    file.persist(path).context("failed to move the compiled component into place")?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| format!("failed to create {}", dir.display()))
}
