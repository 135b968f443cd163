//! OCI runtime spec generation (pure): a container gets its own mount and PID namespaces and
//! joins its pod's network, IPC and UTS namespaces; Docker's default capability set, runc's
//! masked and read-only paths, `noNewPrivileges`, a devices cgroup that denies everything but
//! the standard devices, an explicit `cgroupsPath`, and the CPU and memory limits.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use super::error::{IoContext, RuntimeError};
use super::spec::{Resources, UserSpec, VolumeMount, MAX_SPEC_ITEMS};

/// The CFS period every CPU limit is expressed in (Kubernetes' default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts (1 ms), as Kubernetes clamps it.
const MIN_CPU_QUOTA_US: i64 = 1_000;
/// cgroup v1 cpu.shares bounds; one core (1000 millicores) is 1024 shares.
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;
const SHARES_PER_CPU: u64 = 1024;
/// Open files a container may have (soft and hard), Docker's default; lowered to what the
/// agent may grant (see [`nofile_limit`]).
pub const NOFILE_LIMIT: u64 = 1_048_576;
/// Bit of CAP_SYS_RESOURCE in the capability masks of /proc/self/status.
const CAP_SYS_RESOURCE_BIT: u32 = 24;
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set: everything else is dropped from every set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// runc's default masked paths: bind-mounted over with /dev/null (files) or an empty
/// read-only tmpfs (directories).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Paths of the pod's namespaces, shared by all its containers. `None`: the container
/// shares the node's namespace of that kind (a host-network pod's network and UTS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: PathBuf,
    pub uts: Option<PathBuf>,
}

/// Everything the OCI spec of one container is made of.
#[derive(Debug, Clone)]
pub(crate) struct OciInput<'a> {
    pub argv: &'a [String],
    pub env: &'a [String],
    pub working_dir: &'a str,
    pub user: &'a UserSpec,
    pub resources: Resources,
    pub mounts: &'a [VolumeMount],
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub namespaces: &'a PodNamespaces,
    pub cgroups_path: &'a Path,
    /// Give the container a private cgroup namespace (done on cgroup v2 only, as Docker).
    pub cgroup_namespace: bool,
    /// RLIMIT_NOFILE of the container (see [`nofile_limit`]).
    pub nofile_limit: u64,
}

/// Builds the container's OCI runtime spec.
pub(crate) fn build_spec(input: &OciInput) -> Result<Spec, RuntimeError> {
    validate_input(input)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(input.argv.to_vec())
        .env(container_env(input.env, input.hostname))
        .cwd(working_dir(input.working_dir))
        .user(
            UserBuilder::default()
                .uid(input.user.uid)
                .gid(input.user.gid)
                .additional_gids(input.user.additional_gids.clone())
                .build()
                .map_err(oci_error)?,
        )
        .no_new_privileges(true)
        .capabilities(capabilities()?)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(input.nofile_limit)
            .hard(input.nofile_limit)
            .build()
            .map_err(oci_error)?])
        .build()
        .map_err(oci_error)?;
    let root = RootBuilder::default()
        .path(input.rootfs)
        .readonly(false)
        .build()
        .map_err(oci_error)?;
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(root)
        .hostname(input.hostname)
        .mounts(mounts(input.mounts, input.cgroup_namespace)?)
        .linux(linux(input)?)
        .build()
        .map_err(oci_error)?;
    if input.namespaces.uts.is_none() {
        // In the node's UTS namespace a hostname would rename the node.
        spec.set_hostname(None);
    }
    Ok(spec)
}

fn validate_input(input: &OciInput) -> Result<(), RuntimeError> {
    if input.argv.is_empty() || input.argv[0].is_empty() {
        return Err(RuntimeError::invalid("argv", "a container needs a command"));
    }
    for (what, count) in [
        ("argv", input.argv.len()),
        ("env", input.env.len()),
        ("mounts", input.mounts.len()),
    ] {
        if count > MAX_SPEC_ITEMS {
            return Err(RuntimeError::invalid(
                what,
                format!("{count} entries exceed MAX_SPEC_ITEMS ({MAX_SPEC_ITEMS})"),
            ));
        }
    }
    let all_strings = input.argv.iter().chain(input.env);
    if all_strings.clone().any(|s| s.contains('\0')) {
        return Err(RuntimeError::invalid("argv/env", "contains a NUL byte"));
    }
    if let Some(bad) = input.env.iter().find(|e| !e.contains('=')) {
        return Err(RuntimeError::invalid(
            "env",
            format!("{bad:?} is not KEY=value"),
        ));
    }
    if !input.working_dir.is_empty() {
        check_container_path("workingDir", input.working_dir)?;
    }
    for mount in input.mounts {
        check_container_path("mount path", &mount.container_path)?;
        if !mount.host_path.is_absolute() {
            return Err(RuntimeError::invalid(
                "mount host path",
                format!("{} is not absolute", mount.host_path.display()),
            ));
        }
    }
    Ok(())
}

/// A path inside the container must be absolute and must not climb with `..`.
fn check_container_path(what: &str, path: &str) -> Result<(), RuntimeError> {
    let p = Path::new(path);
    let climbs = p.components().any(|c| c == Component::ParentDir);
    if !p.is_absolute() || climbs || path.contains('\0') {
        return Err(RuntimeError::invalid(
            what,
            format!("{path:?} must be absolute, without '..'"),
        ));
    }
    Ok(())
}

/// Creates the working directory inside `rootfs` when the image lacks it, as runc and
/// containerd do (a Kubernetes `workingDir` need not exist in the image). Only missing plain
/// directories are created; a symlink or file on the way is left alone — following it would
/// resolve against the host, not the container — and the container start reports it.
pub fn ensure_working_dir(rootfs: &Path, dir: &str) -> Result<(), RuntimeError> {
    if dir.is_empty() {
        return Ok(());
    }
    check_container_path("workingDir", dir)?;
    let mut path = rootfs.to_path_buf();
    for component in Path::new(dir).components() {
        let Component::Normal(name) = component else {
            continue;
        };
        path.push(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path).ctx("creating the working directory", &path)?;
            }
            Err(e) => return Err(RuntimeError::io("inspecting", &path, e)),
        }
    }
    Ok(())
}

fn working_dir(dir: &str) -> PathBuf {
    PathBuf::from(if dir.is_empty() { "/" } else { dir })
}

/// The container's environment: a default `PATH` unless given, and `HOSTNAME` (replacing any
/// given value, as Docker does).
fn container_env(env: &[String], hostname: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(env.len() + 2);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        out.push(DEFAULT_PATH.to_string());
    }
    out.extend(env.iter().filter(|e| !e.starts_with("HOSTNAME=")).cloned());
    out.push(format!("HOSTNAME={hostname}"));
    out
}

fn capabilities() -> Result<oci_spec::runtime::LinuxCapabilities, RuntimeError> {
    let set: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(oci_error)
}

fn mounts(volumes: &[VolumeMount], cgroup_namespace: bool) -> Result<Vec<Mount>, RuntimeError> {
    let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let kernel = |dest: &str, typ: &str, src: &str, opts: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src)
            .options(flags(opts))
            .build()
            .map_err(oci_error)
    };
    let mut out = vec![
        kernel("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        kernel(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        kernel(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        kernel(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        kernel(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        kernel(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ];
    // On v2 the container sees its own subtree, read-only, through a cgroup namespace. On v1
    // it gets no cgroupfs at all: nothing a pod runs needs the host's hierarchy layout.
    if cgroup_namespace {
        out.push(kernel(
            "/sys/fs/cgroup",
            "cgroup2",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?);
    }
    for volume in volumes {
        let mut opts = vec!["rbind", "rprivate"];
        if volume.read_only {
            opts.push("ro");
        }
        out.push(
            MountBuilder::default()
                .destination(&volume.container_path)
                .typ("bind")
                .source(&volume.host_path)
                .options(flags(&opts))
                .build()
                .map_err(oci_error)?,
        );
    }
    Ok(out)
}

fn linux(input: &OciInput) -> Result<oci_spec::runtime::Linux, RuntimeError> {
    let ns = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let builder = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => builder.path(p),
            None => builder,
        }
        .build()
        .map_err(oci_error)
    };
    let pod = &input.namespaces;
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid, None)?,
        ns(LinuxNamespaceType::Mount, None)?,
        ns(LinuxNamespaceType::Ipc, Some(&pod.ipc))?,
    ];
    // A namespace left out of the list is the shim's, which is the node's.
    if let Some(net) = &pod.net {
        namespaces.push(ns(LinuxNamespaceType::Network, Some(net))?);
    }
    if let Some(uts) = &pod.uts {
        namespaces.push(ns(LinuxNamespaceType::Uts, Some(uts))?);
    }
    if input.cgroup_namespace {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    let to_strings = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(input.cgroups_path)
        .resources(resources(input.resources)?)
        .masked_paths(to_strings(&MASKED_PATHS))
        .readonly_paths(to_strings(&READONLY_PATHS))
        .build()
        .map_err(oci_error)
}

fn resources(r: Resources) -> Result<oci_spec::runtime::LinuxResources, RuntimeError> {
    // Deny every device; libcgroups then allows the standard ones (null, zero, full, tty,
    // random, urandom, pts, ptmx) it creates in /dev.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(oci_error)?;
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(millis) = r.cpu_request_millis {
        cpu = cpu.shares(cpu_shares(millis));
    }
    if let Some(millis) = r.cpu_limit_millis {
        cpu = cpu.quota(cpu_quota_us(millis)).period(CPU_PERIOD_US);
    }
    let mut builder = LinuxResourcesBuilder::default()
        .devices(vec![deny_all])
        .cpu(cpu.build().map_err(oci_error)?);
    if let Some(bytes) = r.memory_limit_bytes {
        let limit = i64::try_from(bytes)
            .map_err(|_| RuntimeError::invalid("memory limit", "exceeds i64::MAX bytes"))?;
        builder = builder.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(oci_error)?,
        );
    }
    builder.build().map_err(oci_error)
}

/// The open-file limit containers get: [`NOFILE_LIMIT`], or the agent's own hard limit when
/// it lacks CAP_SYS_RESOURCE (raising a hard limit needs it, and the shim inherits both).
pub fn nofile_limit() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let can_raise = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << CAP_SYS_RESOURCE_BIT) != 0);
    let own_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(NOFILE_LIMIT);
    if can_raise {
        NOFILE_LIMIT
    } else {
        own_hard.min(NOFILE_LIMIT)
    }
}

/// Kubernetes' MilliCPUToShares: 1024 shares per core, clamped to the kernel's range.
pub fn cpu_shares(request_millis: u64) -> u64 {
    (request_millis.saturating_mul(SHARES_PER_CPU) / 1000).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
}

/// Kubernetes' MilliCPUToQuota: the share of each period the limit allows, at least 1 ms.
pub fn cpu_quota_us(limit_millis: u64) -> i64 {
    let quota = limit_millis.saturating_mul(CPU_PERIOD_US) / 1000;
    i64::try_from(quota)
        .unwrap_or(i64::MAX)
        .max(MIN_CPU_QUOTA_US)
}

fn oci_error(e: oci_spec::OciSpecError) -> RuntimeError {
    RuntimeError::invalid("OCI spec", e.to_string())
}

#[cfg(test)]
mod working_dir_tests {
    use super::*;

    #[test]
    fn a_missing_working_dir_is_created_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        ensure_working_dir(root.path(), "/srv/app/data").unwrap();
        assert!(root.path().join("srv/app/data").is_dir());
        ensure_working_dir(root.path(), "/srv/app").unwrap();
        ensure_working_dir(root.path(), "").unwrap();
    }

    #[test]
    fn symlinks_in_the_image_are_not_followed_out_of_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("www")).unwrap();
        ensure_working_dir(root.path(), "/www/site").unwrap();
        assert!(
            !outside.path().join("site").exists(),
            "nothing created outside"
        );
        assert!(ensure_working_dir(root.path(), "/../etc").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn namespaces() -> PodNamespaces {
        PodNamespaces {
            net: Some("/run/pod/net".into()),
            ipc: "/run/pod/ipc".into(),
            uts: Some("/run/pod/uts".into()),
        }
    }

    /// Builds a spec from `argv`, `env`, `resources` and `mounts` with fixed other fields.
    fn spec_of(
        argv: &[&str],
        env: &[&str],
        resources: Resources,
        mounts: &[VolumeMount],
    ) -> Result<Spec, RuntimeError> {
        spec_in(&namespaces(), argv, env, resources, mounts)
    }

    /// [`spec_of`] in the namespaces `ns`.
    fn spec_in(
        ns: &PodNamespaces,
        argv: &[&str],
        env: &[&str],
        resources: Resources,
        mounts: &[VolumeMount],
    ) -> Result<Spec, RuntimeError> {
        let (argv, env) = (strings(argv), strings(env));
        let user = UserSpec {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![5],
        };
        build_spec(&OciInput {
            argv: &argv,
            env: &env,
            working_dir: "",
            user: &user,
            resources,
            mounts,
            rootfs: Path::new("/var/lib/c/rootfs"),
            hostname: "web-0",
            namespaces: ns,
            cgroups_path: Path::new("/flotilla/pod/c"),
            cgroup_namespace: false,
            nofile_limit: NOFILE_LIMIT,
        })
    }

    fn check_cpu(
        request: Option<u64>,
        limit: Option<u64>,
        shares: Option<u64>,
        quota: Option<i64>,
    ) {
        let resources = Resources {
            cpu_request_millis: request,
            cpu_limit_millis: limit,
            memory_limit_bytes: None,
        };
        let spec = spec_of(&["/bin/sh"], &[], resources, &[]).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let cpu = linux.resources().as_ref().unwrap().cpu().clone().unwrap();
        assert_eq!(cpu.shares(), shares, "request {request:?}");
        assert_eq!(cpu.quota(), quota, "limit {limit:?}");
        let period = quota.map(|_| CPU_PERIOD_US);
        assert_eq!(cpu.period(), period);
    }

    #[test]
    fn cpu_requests_and_limits_map_like_kubernetes() {
        check_cpu(None, None, None, None);
        check_cpu(Some(1000), None, Some(1024), None);
        check_cpu(Some(250), Some(500), Some(256), Some(50_000));
        check_cpu(Some(1), Some(1), Some(2), Some(1_000));
        check_cpu(None, Some(2000), None, Some(200_000));
        check_cpu(Some(1_000_000), None, Some(262_144), None);
    }

    fn namespaces_of(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        let linux = spec.linux().as_ref().unwrap();
        linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    #[test]
    fn a_host_network_pod_shares_the_nodes_network_and_uts_and_sets_no_hostname() {
        let ns = PodNamespaces {
            net: None,
            ipc: "/run/pod/ipc".into(),
            uts: None,
        };
        let spec = spec_in(&ns, &["/bin/sh"], &[], Resources::default(), &[]).unwrap();
        assert_eq!(
            namespaces_of(&spec),
            vec![
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Ipc, Some("/run/pod/ipc".into())),
            ]
        );
        assert_eq!(spec.hostname(), &None, "would rename the node");
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"HOSTNAME=web-0".to_string()), "{env:?}");
    }

    #[test]
    fn namespaces_are_own_pid_and_mount_and_the_pods_net_ipc_uts() {
        let spec = spec_of(&["/bin/sh"], &[], Resources::default(), &[]).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            namespaces_of(&spec),
            vec![
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Ipc, Some("/run/pod/ipc".into())),
                (LinuxNamespaceType::Network, Some("/run/pod/net".into())),
                (LinuxNamespaceType::Uts, Some("/run/pod/uts".into())),
            ]
        );
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/flotilla/pod/c"))
        );
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert_eq!(
            linux.readonly_paths().as_ref().unwrap().len(),
            READONLY_PATHS.len()
        );
    }

    #[test]
    fn process_is_unprivileged_and_bounded() {
        let spec = spec_of(
            &["/bin/sh", "-c", "true"],
            &["A=1"],
            Resources::default(),
            &[],
        )
        .unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert!(caps.ambient().as_ref().unwrap().is_empty());
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[5][..]));
        assert_eq!(process.cwd(), Path::new("/"));
        let rlimit = &process.rlimits().as_ref().unwrap()[0];
        assert_eq!(rlimit.hard(), NOFILE_LIMIT);
    }

    fn check_env(given: &[&str], expected: &[&str]) {
        assert_eq!(container_env(&strings(given), "web-0"), strings(expected));
    }

    #[test]
    fn environment_gets_path_and_hostname() {
        check_env(&[], &[DEFAULT_PATH, "HOSTNAME=web-0"]);
        check_env(&["PATH=/x", "A=1"], &["PATH=/x", "A=1", "HOSTNAME=web-0"]);
        check_env(
            &["HOSTNAME=evil", "B=2"],
            &[DEFAULT_PATH, "B=2", "HOSTNAME=web-0"],
        );
    }

    #[test]
    fn memory_limit_and_volumes_appear() {
        let resources = Resources {
            memory_limit_bytes: Some(64 << 20),
            ..Resources::default()
        };
        let volume = VolumeMount {
            host_path: "/var/lib/pods/p/vol".into(),
            container_path: "/data".into(),
            read_only: true,
        };
        let spec = spec_of(&["/bin/sh"], &[], resources, &[volume]).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let memory = linux.resources().as_ref().unwrap().memory().unwrap();
        assert_eq!(memory.limit(), Some(64 << 20));
        let mounts = spec.mounts().as_ref().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert!(!mounts
            .iter()
            .any(|m| m.destination() == Path::new("/sys/fs/cgroup")));
    }

    fn check_rejected(argv: &[&str], env: &[&str], container_path: &str) {
        let volume = VolumeMount {
            host_path: "/tmp".into(),
            container_path: container_path.into(),
            read_only: false,
        };
        let result = spec_of(argv, env, Resources::default(), &[volume]);
        assert!(
            matches!(result, Err(RuntimeError::Invalid { .. })),
            "{argv:?} {env:?} {container_path:?}: {result:?}"
        );
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        check_rejected(&[], &[], "/data");
        check_rejected(&[""], &[], "/data");
        check_rejected(&["/bin/sh"], &["NOEQUALS"], "/data");
        check_rejected(&["/bin/sh"], &[], "relative");
        check_rejected(&["/bin/sh"], &[], "/data/../../etc");
        check_rejected(&["/bin/\0sh"], &[], "/data");
    }
}
