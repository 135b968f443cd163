//! Air-gapped side-loading: every file or OCI layout directory dropped into
//! `DATA_DIR/images/import/` is imported into the node's image store, then moved to
//! `import/done/`; one that fails is moved to `import/failed/` next to a `<name>.error` file
//! saying why. The directory is scanned at start and then periodically, so an image copied
//! there later is picked up without a restart.

use std::fs;
use std::path::{Path, PathBuf};

use crate::image::ImageStore;

use super::error::AgentError;

/// Entries imported per scan; the rest wait for the next one.
pub const MAX_IMPORTS_PER_SCAN: usize = 64;
const DONE_DIR: &str = "done";
const FAILED_DIR: &str = "failed";
/// Suffix of files being copied in by convention (`cp x.tar import/x.tar.part && mv …`).
const PARTIAL_SUFFIX: &str = ".part";

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Imported entries and the tags they brought.
    pub imported: Vec<(String, Vec<String>)>,
    /// Entries that failed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Creates the import directory and its `done/` and `failed/` subdirectories.
pub fn prepare_import_dir(import_dir: &Path) -> Result<(), AgentError> {
    for dir in [
        import_dir.to_path_buf(),
        import_dir.join(DONE_DIR),
        import_dir.join(FAILED_DIR),
    ] {
        fs::create_dir_all(&dir).map_err(|e| AgentError::io("creating", &dir, e))?;
    }
    Ok(())
}

/// Imports what is waiting in `import_dir` (blocking: call from a blocking thread).
pub fn import_pending(store: &ImageStore, import_dir: &Path) -> ImportReport {
    let mut report = ImportReport::default();
    for entry in pending_entries(import_dir) {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match store.import(&entry) {
            Ok(images) => {
                let tags = images.into_iter().flat_map(|i| i.tags).collect();
                tracing::info!(file = %name, ?tags, "image imported");
                move_aside(&entry, &import_dir.join(DONE_DIR).join(&name));
                report.imported.push((name, tags));
            }
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "image import failed");
                let failed = import_dir.join(FAILED_DIR);
                let _ = fs::write(failed.join(format!("{name}.error")), format!("{e}\n"));
                move_aside(&entry, &failed.join(&name));
                report.failed.push((name, e.to_string()));
            }
        }
    }
    report
}

/// Entries of the import directory, oldest name first, without the bookkeeping directories
/// and files still being copied.
fn pending_entries(import_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(import_dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| {
                n != DONE_DIR
                    && n != FAILED_DIR
                    && !n.starts_with('.')
                    && !n.ends_with(PARTIAL_SUFFIX)
            })
        })
        .collect();
    paths.sort();
    paths.truncate(MAX_IMPORTS_PER_SCAN);
    paths
}

/// Moves `from` to `to`, replacing an older entry of the same name.
fn move_aside(from: &Path, to: &Path) {
    if to.is_dir() {
        let _ = fs::remove_dir_all(to);
    }
    if let Err(e) = fs::rename(from, to) {
        tracing::warn!(from = %from.display(), error = %e, "could not move an import aside");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{pack_directory, ImageConfig};

    #[test]
    fn imported_files_move_to_done_and_broken_ones_to_failed_with_the_reason() {
        let root = tempfile::tempdir().unwrap();
        let import = root.path().join("import");
        prepare_import_dir(&import).unwrap();
        let tree = root.path().join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/motd"), "hi\n").unwrap();
        pack_directory(
            &tree,
            "tiny:1",
            &ImageConfig::default(),
            &import.join("tiny.tar"),
        )
        .unwrap();
        fs::write(import.join("junk.tar"), "not an image").unwrap();
        fs::write(import.join("copying.tar.part"), "half").unwrap();
        let store = ImageStore::open(&root.path().join("store")).unwrap();

        let report = import_pending(&store, &import);
        assert_eq!(
            report.imported,
            vec![("tiny.tar".to_string(), vec!["tiny:1".to_string()])]
        );
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "junk.tar");
        assert!(store.resolve("tiny:1").is_ok());
        assert!(import.join("done/tiny.tar").exists());
        assert!(import.join("failed/junk.tar").exists());
        let reason = fs::read_to_string(import.join("failed/junk.tar.error")).unwrap();
        assert!(!reason.trim().is_empty());
        assert!(
            import.join("copying.tar.part").exists(),
            "a partial copy waits"
        );
        assert_eq!(
            import_pending(&store, &import),
            ImportReport::default(),
            "nothing twice"
        );
    }
}
