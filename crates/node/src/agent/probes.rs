//! Liveness and readiness probes of running containers: a pod spec's probe turned into the
//! runtime's [`ProbeAction`] and [`ProbeTiming`] (pure), and one task per probe and container
//! instance that runs it on schedule through [`ProbeState`] and publishes the result, waking
//! the pod worker when it changes. The task ends when its [`ProbeHandle`] is dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use flotilla_state::objects::{Container, IntOrString, Probe, Scheme};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::runtime::{
    run_probe, ContainerId, ProbeAction, ProbeResult, ProbeState, ProbeTiming, Runtime,
};

/// Shortest probe period honoured (Kubernetes' minimum is one second).
pub const MIN_PROBE_PERIOD: Duration = Duration::from_secs(1);

/// The runtime's view of a pod probe; an error names what cannot be probed.
pub fn probe_plan(
    probe: &Probe,
    container: &Container,
) -> Result<(ProbeAction, ProbeTiming), String> {
    let seconds =
        |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |s| s.max(0) as u64));
    let count = |v: Option<i32>, default: u32| v.map_or(default, |n| n.max(1) as u32);
    let timing = ProbeTiming {
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10).max(MIN_PROBE_PERIOD),
        timeout: seconds(probe.timeout_seconds, 1).max(MIN_PROBE_PERIOD),
        success_threshold: count(probe.success_threshold, 1),
        failure_threshold: count(probe.failure_threshold, 3),
    };
    let action = if let Some(exec) = &probe.exec {
        if exec.command.is_empty() {
            return Err("exec probe without a command".into());
        }
        ProbeAction::Exec {
            argv: exec.command.clone(),
        }
    } else if let Some(http) = &probe.http_get {
        if http.scheme == Some(Scheme::Https) {
            return Err("HTTPS probes are not supported".into());
        }
        ProbeAction::HttpGet {
            port: port(&http.port, container)?,
            path: if http.path.is_empty() {
                "/".into()
            } else {
                http.path.clone()
            },
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        ProbeAction::TcpSocket {
            port: port(&tcp.port, container)?,
        }
    } else {
        return Err("probe has no exec, httpGet or tcpSocket".into());
    };
    Ok((action, timing))
}

/// A port number, or the number of the container port of that name.
fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .port_named(name)
            .map(|p| p.container_port)
            .ok_or_else(|| format!("no container port named {name:?}"))?,
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("port {number} is out of range"))
}

/// A running probe; dropping it stops the probe.
pub struct ProbeHandle {
    result: watch::Receiver<ProbeResult>,
    task: tokio::task::JoinHandle<()>,
}

impl ProbeHandle {
    pub fn result(&self) -> ProbeResult {
        *self.result.borrow()
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a probe task needs.
pub struct ProbeTarget {
    pub runtime: Arc<Runtime>,
    pub id: ContainerId,
    pub pod_ip: Option<IpAddr>,
    /// When the container started: probe times count from here.
    pub started: Instant,
    /// Woken when the result changes.
    pub wake: Arc<Notify>,
}

/// Starts probing with `initial` as the result until the first verdict.
pub fn spawn_probe(
    target: ProbeTarget,
    action: ProbeAction,
    timing: ProbeTiming,
    initial: ProbeResult,
) -> ProbeHandle {
    let (tx, rx) = watch::channel(initial);
    let task = tokio::spawn(probe_loop(target, action, timing, initial, tx));
    ProbeHandle { result: rx, task }
}

async fn probe_loop(
    target: ProbeTarget,
    action: ProbeAction,
    timing: ProbeTiming,
    initial: ProbeResult,
    tx: watch::Sender<ProbeResult>,
) {
    let mut state = ProbeState::new(timing, initial);
    // Without a pod network an HTTP or TCP probe has nothing to reach: it fails.
    let ip = target.pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    loop {
        let now = target.started.elapsed();
        if state.is_due(now) {
            state.begin(now);
            let outcome = run_probe(&target.runtime, &target.id, ip, &action, timing.timeout).await;
            if let Some(result) = state.record(outcome) {
                tx.send_replace(result);
                target.wake.notify_one();
            }
        }
        tokio::time::sleep_until(target.started + state.next_due()).await;
    }
}

#[cfg(test)]
mod tests {
    use flotilla_state::objects::{ContainerPort, ExecAction, HttpGetAction, TcpSocketAction};

    use super::*;

    fn container() -> Container {
        Container {
            ports: vec![ContainerPort {
                name: "http".into(),
                container_port: 8080,
                ..ContainerPort::default()
            }],
            ..Container::default()
        }
    }

    fn check(probe: Probe, expected: Result<ProbeAction, &str>) {
        let got = probe_plan(&probe, &container()).map(|(a, _)| a);
        match expected {
            Ok(action) => assert_eq!(got, Ok(action)),
            Err(text) => assert!(got.unwrap_err().contains(text)),
        }
    }

    #[test]
    fn probes_resolve_named_ports_and_refuse_what_cannot_run() {
        let http = |port: IntOrString, scheme| Probe {
            http_get: Some(HttpGetAction {
                path: String::new(),
                port,
                host: String::new(),
                scheme,
            }),
            ..Probe::default()
        };
        check(
            http(IntOrString::String("http".into()), None),
            Ok(ProbeAction::HttpGet {
                port: 8080,
                path: "/".into(),
            }),
        );
        check(
            http(IntOrString::String("nope".into()), None),
            Err("no container port"),
        );
        check(http(IntOrString::Int(70000), None), Err("out of range"));
        check(
            http(IntOrString::Int(80), Some(Scheme::Https)),
            Err("HTTPS"),
        );
        let tcp = Probe {
            tcp_socket: Some(TcpSocketAction {
                port: IntOrString::Int(9),
                host: String::new(),
            }),
            ..Probe::default()
        };
        check(tcp, Ok(ProbeAction::TcpSocket { port: 9 }));
        let exec = Probe {
            exec: Some(ExecAction {
                command: vec!["true".into()],
            }),
            ..Probe::default()
        };
        check(
            exec,
            Ok(ProbeAction::Exec {
                argv: vec!["true".into()],
            }),
        );
        check(Probe::default(), Err("no exec"));
    }

    #[test]
    fn timing_comes_from_the_probe_with_floors() {
        let probe = Probe {
            tcp_socket: Some(TcpSocketAction {
                port: IntOrString::Int(9),
                host: String::new(),
            }),
            initial_delay_seconds: Some(2),
            period_seconds: Some(0),
            failure_threshold: Some(1),
            ..Probe::default()
        };
        let (_, timing) = probe_plan(&probe, &container()).unwrap();
        assert_eq!(timing.initial_delay, Duration::from_secs(2));
        assert_eq!(timing.period, MIN_PROBE_PERIOD);
        assert_eq!(timing.failure_threshold, 1);
        assert_eq!(timing.success_threshold, 1);
    }
}
