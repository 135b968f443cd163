//! The test image agents run: Debian's static busybox with every applet linked, packed once per
//! run by `flotilla image pack` into an OCI archive tagged `busybox:latest`, and dropped into
//! each agent's `images/import/` directory before the agent starts (the agent imports that
//! directory at start and then every few seconds).

use std::path::{Path, PathBuf};

use crate::error::ChaosError;
use crate::sys;

/// The image's reference in pod specs.
pub const IMAGE: &str = "busybox:latest";

/// The static busybox the image is built from (`apt-get install busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Most applets linked into the image.
const MAX_APPLETS: usize = 1_000;

/// Packs the image into `dir/busybox.tar` and returns its path.
pub async fn pack_busybox(flotilla: &Path, dir: &Path) -> Result<PathBuf, ChaosError> {
    let root = dir.join("busybox-rootfs");
    let bin = root.join("bin");
    for sub in [&bin, &root.join("tmp"), &root.join("etc")] {
        std::fs::create_dir_all(sub)
            .map_err(|e| ChaosError::io(format!("creating {}", sub.display()), e))?;
    }
    std::fs::copy(BUSYBOX, bin.join("busybox")).map_err(|e| {
        ChaosError::io(
            format!("copying {BUSYBOX} (apt-get install busybox-static)"),
            e,
        )
    })?;
    let applets = sys::run_str(BUSYBOX, &["--list"]).await?;
    for applet in applet_names(&applets) {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .map_err(|e| ChaosError::io(format!("linking applet {applet}"), e))?;
    }
    let out = dir.join("busybox.tar");
    let (root_text, out_text) = (root.display().to_string(), out.display().to_string());
    let flotilla = flotilla.display().to_string();
    let pack = [
        "image", "pack", &root_text, "--tag", IMAGE, "--cmd", "sh", "-o", &out_text,
    ];
    sys::run_str(&flotilla, &pack).await?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(out)
}

/// Applet names from `busybox --list` (plain names only, never `busybox` itself).
pub fn applet_names(list: &str) -> Vec<&str> {
    list.lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
        .filter(|a| {
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.[".contains(c))
        })
        .filter(|a| !a.starts_with('.'))
        .take(MAX_APPLETS)
        .collect()
}

/// Copies the packed image into an agent's import directory.
pub fn stage(image: &Path, agent_data_dir: &Path) -> Result<(), ChaosError> {
    let import = agent_data_dir.join("images").join("import");
    std::fs::create_dir_all(&import)
        .map_err(|e| ChaosError::io(format!("creating {}", import.display()), e))?;
    std::fs::copy(image, import.join("busybox.tar"))
        .map(|_| ())
        .map_err(|e| ChaosError::io(format!("staging the image in {}", import.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_names_are_plain_file_names() {
        let list = "sh\nsleep\nbusybox\n[\n[[\n../evil\n\nhttpd\n";
        assert_eq!(applet_names(list), ["sh", "sleep", "[", "[[", "httpd"]);
    }
}
