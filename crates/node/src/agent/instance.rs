//! Starting one container instance: the image resolved and pinned from the node's store, the
//! environment and mounts resolved, the root filesystem prepared, the runtime asked to start
//! it in the pod's sandbox. The previous instance is kept (its log serves `--previous`), the
//! one before it removed, and the journal records the new instance's image and backoff.
//!
//! A missing image or unresolvable config *blocks* the start (a waiting reason, retried on
//! every pass without counting a restart); a runtime failure *fails* it (an exit with the
//! start-failure code, subject to the restart policy and backoff like any other exit).

use std::time::SystemTime;

use flotilla_state::objects::{Container, Pod};

use crate::image::{prepare_rootfs, resolve_argv, ImageError, PinGuard};
use crate::runtime::{BackoffState, ContainerId, ContainerSpec};

use super::record::{ContainerRecord, Current};
use super::spec::{self, Blocker};
use super::status::{
    CREATE_CONTAINER_ERROR, ERR_IMAGE_PULL, IMAGE_PULL_BACK_OFF, INVALID_IMAGE_NAME,
};
use super::worker::PodWorker;

/// Why no instance was started.
enum NotStarted {
    Blocked(Blocker),
    Failed(String),
}

/// A container ready to hand to the runtime, with its image pinned.
struct Prepared {
    spec: ContainerSpec,
    pin: PinGuard,
    digest: String,
}

impl PodWorker {
    /// Starts the next instance of `c`, which will carry `backoff`.
    pub(super) async fn start_instance(&mut self, pod: &Pod, c: &Container, backoff: BackoffState) {
        let prepared = self.prepare(pod, c).await;
        let started = match prepared {
            Err(NotStarted::Blocked(blocker)) => {
                self.records.entry(c.name.clone()).or_default().blocker = Some(blocker);
                return;
            }
            Err(NotStarted::Failed(message)) => Err(message),
            Ok(prepared) => match &self.sandbox {
                Some(sandbox) => match self
                    .ctx
                    .runtime
                    .start_container(sandbox, prepared.spec)
                    .await
                {
                    Ok(id) => Ok((id, prepared.pin, prepared.digest)),
                    Err(e) => Err(e.to_string()),
                },
                None => return,
            },
        };
        self.rotate(&c.name).await;
        let record = self.records.entry(c.name.clone()).or_default();
        record.blocker = None;
        record.backoff = backoff;
        let journal = self.journal.containers.entry(c.name.clone()).or_default();
        journal.set_backoff(backoff);
        match started {
            Ok((id, pin, digest)) => {
                tracing::info!(container = %id, restarts = backoff.restart_count, "container started");
                journal.images.insert(id.to_string(), digest);
                record.pins.insert(id.clone(), pin);
                record.current = Current::Instance(id);
            }
            Err(message) => {
                tracing::warn!(pod = %self.uid, container = %c.name, error = %message, "container failed to start");
                record.current = Current::StartFailed {
                    at: SystemTime::now(),
                    message,
                };
            }
        }
        record.prune();
        let keep = record.instances();
        journal.images.retain(|id, _| {
            keep.current.as_ref().is_some_and(|c| c.as_str() == id)
                || keep.previous.as_ref().is_some_and(|p| p.as_str() == id)
        });
        if let Err(e) = self.dir.save(&self.journal) {
            tracing::warn!(pod = %self.uid, error = %e, "pod journal not written");
        }
    }

    /// Makes the exited current instance the previous one, removing the one before it.
    async fn rotate(&mut self, name: &str) {
        let record = self.records.entry(name.to_string()).or_default();
        let Current::Instance(old) = &record.current else {
            return;
        };
        let Some(older) = record.previous.replace(old.clone()) else {
            return;
        };
        remove_instance(&self.ctx.runtime, record, &older).await;
    }

    async fn prepare(&self, pod: &Pod, c: &Container) -> Result<Prepared, NotStarted> {
        let (image, pin) = self
            .ctx
            .images
            .acquire(&c.image)
            .map_err(|e| image_blocker(&c.image, e))?;
        let argv = resolve_argv(
            &image.config.entrypoint,
            &image.config.cmd,
            &c.command,
            &c.args,
        );
        if argv.is_empty() {
            return Err(NotStarted::Blocked(Blocker {
                reason: CREATE_CONTAINER_ERROR,
                message: "no command specified: the image has none and the container sets none"
                    .into(),
            }));
        }
        let user = spec::user_of(&image.config.user).map_err(NotStarted::Blocked)?;
        let ours = spec::container_env(&self.ctx.client, &pod.metadata.namespace, &c.env)
            .await
            .map_err(NotStarted::Blocked)?;
        let env = spec::merge_env(&image.config.env, &ours);
        let empty = Default::default();
        let mounts =
            spec::mounts(c, self.volumes_ref().unwrap_or(&empty)).map_err(NotStarted::Blocked)?;
        let rootfs_dir = self
            .ctx
            .runtime
            .rootfs_dir()
            .map_err(|e| NotStarted::Failed(e.to_string()))?;
        let for_rootfs = (image.clone(), rootfs_dir.clone());
        let rootfs =
            tokio::task::spawn_blocking(move || prepare_rootfs(&for_rootfs.0, &for_rootfs.1))
                .await
                .map_err(|e| NotStarted::Failed(e.to_string()))
                .and_then(|r| r.map_err(|e| NotStarted::Failed(e.to_string())));
        let rootfs = match rootfs {
            Ok(rootfs) => rootfs,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&rootfs_dir);
                return Err(e);
            }
        };
        let working_dir = if c.working_dir.is_empty() {
            image.config.working_dir.clone()
        } else {
            c.working_dir.clone()
        };
        let spec = ContainerSpec {
            name: c.name.clone(),
            argv,
            env,
            working_dir,
            user,
            rootfs,
            resources: spec::resources(c),
            mounts,
        };
        Ok(Prepared {
            spec,
            pin,
            digest: image.digest.to_string(),
        })
    }
}

/// Removes an exited instance and forgets its pin.
pub(super) async fn remove_instance(
    runtime: &crate::runtime::Runtime,
    record: &mut ContainerRecord,
    id: &ContainerId,
) {
    if let Err(e) = runtime.remove(id).await {
        tracing::warn!(container = %id, error = %e, "could not remove an old container instance");
    }
    record.pins.remove(id);
    record.notes.remove(id);
}

/// The waiting reason for an image the store cannot provide.
fn image_blocker(reference: &str, error: ImageError) -> NotStarted {
    let (reason, message) = match error {
        ImageError::NotFound { .. } => (
            IMAGE_PULL_BACK_OFF,
            format!(
                "image \"{reference}\" is not in this node's image store; import it with `flotilla image import`"
            ),
        ),
        ImageError::InvalidReference { .. } => (INVALID_IMAGE_NAME, error.to_string()),
        other => (ERR_IMAGE_PULL, format!("image \"{reference}\": {other}")),
    };
    NotStarted::Blocked(Blocker { reason, message })
}
