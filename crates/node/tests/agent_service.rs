//! The agent API over gRPC (root only), reached the way the CLI reaches it — through the
//! Node's `flotilla.dev/agent-endpoint` annotation: logs (all, tail, follow, previous
//! instance) and exec (exit code, stdout, stderr), and the errors a user gets for a pod or
//! container that is not there.

mod agent_common;

use agent_common::{container, phase_is, pod, World};
use flotilla_api::agent::agent_api_client::AgentApiClient;
use flotilla_api::agent::{ExecRequest, LogsRequest};
use flotilla_node::agent::AGENT_ENDPOINT_ANNOTATION;
use serde_json::json;
use tonic::transport::Channel;
use tonic::Code;

async fn client(world: &World) -> AgentApiClient<Channel> {
    let node = world.wait_node_ready().await;
    let endpoint = &node.metadata.annotations[AGENT_ENDPOINT_ANNOTATION];
    AgentApiClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap()
}

fn logs(pod: &str, follow: bool, previous: bool, tail_lines: Option<i64>) -> LogsRequest {
    LogsRequest {
        namespace: String::new(),
        pod: pod.into(),
        container: String::new(),
        follow,
        previous,
        tail_lines,
    }
}

/// The lines a logs call returns (`stream:content`), read to the end of the stream.
async fn read_logs(
    c: &mut AgentApiClient<Channel>,
    request: LogsRequest,
) -> Result<Vec<String>, Code> {
    let mut stream = c.logs(request).await.map_err(|s| s.code())?.into_inner();
    let mut lines = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(|s| s.code())? {
        lines.push(format!(
            "{}:{}",
            chunk.stream,
            String::from_utf8_lossy(&chunk.content)
        ));
    }
    Ok(lines)
}

async fn check_logs(c: &mut AgentApiClient<Channel>, request: LogsRequest, expected: &[&str]) {
    let got = read_logs(c, request.clone()).await.unwrap();
    assert_eq!(got, expected, "{request:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_from_the_current_or_previous_instance() {
    let world = World::new().await;
    let mut c = client(&world).await;
    // stdout and stderr are separate pipes: only lines of one stream keep their order, so
    // the stderr line goes first, well before the others.
    let talker = "echo zero >&2; sleep 0.5; echo one; seq 3 5; sleep 1000";
    world.run_pod("talker", talker).await;
    // Counts its instances in an emptyDir (which outlives restarts); the second one stays.
    let counter = "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; \
                   echo instance-$n; if [ $n -ge 2 ]; then sleep 1000; fi; exit 1";
    let mut object = pod("counter", &world.node, counter);
    object["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    object["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    world.api.apply(&object).await;
    let follower = "echo first; sleep 1; echo second";
    let mut object = pod("follower", &world.node, follower);
    object["spec"]["restartPolicy"] = json!("Never");
    world.api.apply(&object).await;
    world
        .api
        .wait_pod("talker", "Running", |p| phase_is(p, "Running"))
        .await;
    world
        .api
        .wait_pod("counter", "running its second instance", |p| {
            container(p, "main").is_some_and(|c| c.restart_count == 1 && c.ready)
        })
        .await;
    // The talker may still be writing right after it started.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let all = [
        "stderr:zero",
        "stdout:one",
        "stdout:3",
        "stdout:4",
        "stdout:5",
    ];
    check_logs(&mut c, logs("talker", false, false, None), &all).await;
    check_logs(&mut c, logs("talker", false, false, Some(2)), &all[3..]).await;
    check_logs(
        &mut c,
        logs("counter", false, false, None),
        &["stdout:instance-2"],
    )
    .await;
    check_logs(
        &mut c,
        logs("counter", false, true, None),
        &["stdout:instance-1"],
    )
    .await;
    // Following ends when the container exits, after its last line.
    let followed = read_logs(&mut c, logs("follower", true, false, None))
        .await
        .unwrap();
    assert_eq!(followed, ["stdout:first", "stdout:second"]);

    let missing = read_logs(&mut c, logs("nobody", false, false, None)).await;
    assert_eq!(missing, Err(Code::NotFound));
    let no_previous = read_logs(&mut c, logs("talker", false, true, None)).await;
    assert_eq!(no_previous, Err(Code::NotFound));
    let negative = read_logs(&mut c, logs("talker", false, false, Some(-1))).await;
    assert_eq!(negative, Err(Code::InvalidArgument));
}

fn exec(pod: &str, container: &str, argv: &[&str]) -> ExecRequest {
    ExecRequest {
        namespace: "default".into(),
        pod: pod.into(),
        container: container.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms: 20_000,
    }
}

/// Runs an exec; returns (exit code, stdout, stderr) or the error code.
async fn check_exec(
    c: &mut AgentApiClient<Channel>,
    request: ExecRequest,
    expected: Result<(i32, &str, &str), Code>,
) {
    let got = match c.exec(request.clone()).await {
        Ok(r) => {
            let r = r.into_inner();
            Ok((
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).into_owned(),
                String::from_utf8_lossy(&r.stderr).into_owned(),
            ))
        }
        Err(s) => Err(s.code()),
    };
    let expected = expected.map(|(code, out, err)| (code, out.to_string(), err.to_string()));
    assert_eq!(got, expected, "{request:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_in_the_named_container() {
    let world = World::new().await;
    let mut c = client(&world).await;
    let mut object = pod("duo", &world.node, "echo a > /tmp/who; sleep 1000");
    let second = json!({"name": "side", "image": agent_common::IMAGE, "command": ["/bin/sh", "-c", "echo b > /tmp/who; sleep 1000"]});
    object["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(second);
    world.api.apply(&object).await;
    world.run_pod("solo", "sleep 1000").await;
    for name in ["duo", "solo"] {
        world
            .api
            .wait_pod(name, "Running", |p| phase_is(p, "Running"))
            .await;
    }
    let script = ["sh", "-c", "echo out; echo err >&2; exit 7"];
    check_exec(&mut c, exec("solo", "", &script), Ok((7, "out\n", "err\n"))).await;
    check_exec(
        &mut c,
        exec("duo", "main", &["cat", "/tmp/who"]),
        Ok((0, "a\n", "")),
    )
    .await;
    check_exec(
        &mut c,
        exec("duo", "side", &["cat", "/tmp/who"]),
        Ok((0, "b\n", "")),
    )
    .await;
    check_exec(
        &mut c,
        exec("duo", "", &["true"]),
        Err(Code::InvalidArgument),
    )
    .await;
    check_exec(&mut c, exec("duo", "nope", &["true"]), Err(Code::NotFound)).await;
    check_exec(&mut c, exec("ghost", "", &["true"]), Err(Code::NotFound)).await;
    check_exec(&mut c, exec("solo", "", &[]), Err(Code::InvalidArgument)).await;
}
