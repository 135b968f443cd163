//! The register workload: `clients` concurrent clients, each with its own connection to a
//! random serving peer, issue a random mix of linearizable reads, writes of unique values and
//! compare-and-sets on `keys` registers, and record every op's invocation, completion and
//! outcome through the run's [`Recorder`].
//!
//! Generic over the store through [`RegisterBackend`]. Outcomes follow the history's rules: a
//! reply is `Ok`; a compare-and-set whose comparison failed, or an error that proves the op was
//! not applied, is `Fail`; a timeout or a lost connection is `Info`. After an `Info` the client
//! continues as a new process (its old op may still be in flight forever) on a new connection.
//!
//! Bounded: the loop stops at `deadline` or after `max_ops` ops across all clients, whichever
//! comes first.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cluster::{Endpoint, Endpoints};
use crate::error::ChaosError;
use crate::history::{OpKind, Outcome, Recorder, Value};

/// A client that finds no serving peer waits this long before looking again.
const NO_ENDPOINT_PAUSE: Duration = Duration::from_millis(100);

/// A client moves to another random peer after this many ops on one connection.
pub const OPS_PER_CONNECTION: u32 = 200;

/// Percent of ops that are reads; writes and compare-and-sets share the rest equally.
pub const READ_PERCENT: u32 = 50;

/// Why an op did not return a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The store proved the op was not applied.
    Definite(String),
    /// It may or may not have been applied.
    Indeterminate(String),
}

/// One client connection to a store holding registers.
pub trait RegisterConn: Send {
    fn read(&mut self, key: &str) -> impl Future<Output = Result<Option<Value>, OpError>> + Send;
    fn write(
        &mut self,
        key: &str,
        value: Value,
    ) -> impl Future<Output = Result<(), OpError>> + Send;
    /// Sets `key` to `new` if it holds `expect`; `Ok(false)` when the comparison failed.
    fn cas(
        &mut self,
        key: &str,
        expect: Value,
        new: Value,
    ) -> impl Future<Output = Result<bool, OpError>> + Send;
}

/// Opens connections to a store holding registers.
pub trait RegisterBackend: Send + Sync + 'static {
    type Conn: RegisterConn + 'static;
    fn connect(&self, endpoint: Endpoint) -> Result<Self::Conn, ChaosError>;
}

#[derive(Debug, Clone)]
pub struct RegisterConfig {
    pub key_prefix: String,
    pub keys: u32,
    pub clients: u32,
    /// Ops across all clients.
    pub max_ops: u64,
    pub duration: Duration,
    /// Each client waits up to this long between ops.
    pub think_max: Duration,
    /// An op with no answer after this long is recorded as indeterminate.
    pub op_timeout: Duration,
    pub seed: u64,
}

/// The name of register `index`.
pub fn key_name(prefix: &str, index: u32) -> String {
    format!("{prefix}{index:03}")
}

/// What every client shares.
struct Shared<W: Write + Send> {
    config: RegisterConfig,
    recorder: Arc<Recorder<W>>,
    endpoints: Endpoints,
    deadline: Instant,
    ops_started: AtomicU64,
}

impl<W: Write + Send> Shared<W> {
    fn take_op(&self) -> bool {
        Instant::now() < self.deadline
            && self.ops_started.fetch_add(1, Ordering::Relaxed) < self.config.max_ops
    }
}

/// Runs the workload to its end and returns how many ops were started.
pub async fn run<B: RegisterBackend, W: Write + Send + 'static>(
    backend: Arc<B>,
    config: RegisterConfig,
    recorder: Arc<Recorder<W>>,
    endpoints: Endpoints,
) -> Result<u64, ChaosError> {
    let shared = Arc::new(Shared {
        deadline: Instant::now() + config.duration,
        config,
        recorder,
        endpoints,
        ops_started: AtomicU64::new(0),
    });
    let mut clients = JoinSet::new();
    for index in 0..shared.config.clients {
        clients.spawn(client_loop(index, backend.clone(), shared.clone()));
    }
    let mut first_error = None;
    while let Some(joined) = clients.join_next().await {
        let result = joined.map_err(|e| ChaosError::Config(format!("client task failed: {e}")));
        if let Err(e) = result.and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(shared
            .ops_started
            .load(Ordering::Relaxed)
            .min(shared.config.max_ops)),
    }
}

/// One client's state between ops.
struct Client<C> {
    index: u32,
    incarnation: u64,
    counter: u64,
    /// The value this client last saw in each register, for compare-and-set.
    known: HashMap<u32, Value>,
    conn: Option<C>,
    ops_on_conn: u32,
    rng: StdRng,
}

impl<C> Client<C> {
    fn process(&self, clients: u32) -> u64 {
        u64::from(self.index) + u64::from(clients) * self.incarnation
    }

    /// A value no other op of the run writes: the process in the high half, a counter below.
    fn next_value(&mut self, clients: u32) -> Value {
        self.counter += 1;
        ((self.process(clients) + 1) << 32) | (self.counter & 0xffff_ffff)
    }

    /// After an indeterminate op: a new process on a new connection, knowing nothing.
    fn crash(&mut self) {
        self.incarnation += 1;
        self.counter = 0;
        self.conn = None;
        self.known.clear();
    }
}

async fn client_loop<B: RegisterBackend, W: Write + Send>(
    index: u32,
    backend: Arc<B>,
    shared: Arc<Shared<W>>,
) -> Result<(), ChaosError> {
    let seed = shared.config.seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut client: Client<B::Conn> = Client {
        index,
        incarnation: 0,
        counter: 0,
        known: HashMap::new(),
        conn: None,
        ops_on_conn: 0,
        rng: StdRng::seed_from_u64(seed),
    };
    while shared.take_op() {
        if client.conn.is_none() || client.ops_on_conn >= OPS_PER_CONNECTION {
            let Some(endpoint) = shared.endpoints.pick(&mut client.rng) else {
                tokio::time::sleep(NO_ENDPOINT_PAUSE).await;
                continue;
            };
            client.conn = Some(backend.connect(endpoint)?);
            client.ops_on_conn = 0;
        }
        one_op(&mut client, &shared).await?;
        let think_ms = shared.config.think_max.as_millis() as u64;
        if think_ms > 0 {
            let pause = client.rng.gen_range(0..=think_ms);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    Ok(())
}

fn choose_op<C>(client: &mut Client<C>, key_index: u32, clients: u32) -> OpKind {
    let roll = client.rng.gen_range(0..100);
    if roll < READ_PERCENT {
        return OpKind::Read;
    }
    let write = roll < READ_PERCENT + (100 - READ_PERCENT) / 2;
    match client.known.get(&key_index).copied() {
        Some(expect) if !write => OpKind::Cas {
            expect,
            new: client.next_value(clients),
        },
        None if !write => OpKind::Read,
        _ => OpKind::Write(client.next_value(clients)),
    }
}

async fn one_op<C: RegisterConn, W: Write + Send>(
    client: &mut Client<C>,
    shared: &Shared<W>,
) -> Result<(), ChaosError> {
    let config = &shared.config;
    let key_index = client.rng.gen_range(0..config.keys);
    let key = key_name(&config.key_prefix, key_index);
    let kind = choose_op(client, key_index, config.clients);
    let process = client.process(config.clients);
    let Some(conn) = client.conn.as_mut() else {
        return Ok(());
    };
    let id = shared.recorder.invoke(process, &key, kind)?;
    let outcome = match tokio::time::timeout(config.op_timeout, execute(conn, &key, kind)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(OpError::Indeterminate("timed out".into())),
    };
    let recorded = record_outcome(kind, &outcome);
    shared.recorder.complete(id, recorded)?;
    client.ops_on_conn += 1;
    learn(client, key_index, kind, &outcome);
    Ok(())
}

/// What a finished op returned: for a read, the value; for a compare-and-set, whether it set.
enum Done {
    Read(Option<Value>),
    Written,
    Compared(bool),
}

async fn execute<C: RegisterConn>(conn: &mut C, key: &str, kind: OpKind) -> Result<Done, OpError> {
    match kind {
        OpKind::Read => conn.read(key).await.map(Done::Read),
        OpKind::Write(value) => conn.write(key, value).await.map(|()| Done::Written),
        OpKind::Cas { expect, new } => conn.cas(key, expect, new).await.map(Done::Compared),
    }
}

fn record_outcome(kind: OpKind, outcome: &Result<Done, OpError>) -> Outcome {
    match outcome {
        Ok(Done::Read(read)) => Outcome::Ok { read: *read },
        Ok(Done::Written) | Ok(Done::Compared(true)) => Outcome::Ok { read: None },
        Ok(Done::Compared(false)) => Outcome::Fail,
        Err(OpError::Definite(_)) if kind != OpKind::Read => Outcome::Fail,
        Err(_) => Outcome::Info,
    }
}

/// Updates what the client knows after an op, and crashes it after an indeterminate one.
fn learn<C>(client: &mut Client<C>, key_index: u32, kind: OpKind, outcome: &Result<Done, OpError>) {
    match (kind, outcome) {
        (_, Ok(Done::Read(Some(value)))) => {
            client.known.insert(key_index, *value);
        }
        (_, Ok(Done::Read(None))) | (_, Ok(Done::Compared(false))) => {
            client.known.remove(&key_index);
        }
        (OpKind::Write(value), Ok(Done::Written)) => {
            client.known.insert(key_index, value);
        }
        (OpKind::Cas { new, .. }, Ok(Done::Compared(true))) => {
            client.known.insert(key_index, new);
        }
        (_, Ok(_)) => {}
        (_, Err(OpError::Definite(_))) => {
            client.known.remove(&key_index);
            client.conn = None;
        }
        (_, Err(OpError::Indeterminate(_))) => client.crash(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client<()> {
        Client {
            index: 2,
            incarnation: 0,
            counter: 0,
            known: HashMap::new(),
            conn: Some(()),
            ops_on_conn: 0,
            rng: StdRng::seed_from_u64(1),
        }
    }

    #[test]
    fn values_are_unique_across_processes_and_incarnations() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..4 {
            let mut c = client();
            c.index = index;
            for _ in 0..3 {
                for _ in 0..100 {
                    assert!(seen.insert(c.next_value(4)));
                }
                c.crash();
            }
        }
    }

    #[test]
    fn outcomes_follow_the_history_rules() {
        let check = |kind: OpKind, outcome: Result<Done, OpError>, expected: Outcome| {
            assert_eq!(record_outcome(kind, &outcome), expected);
        };
        let cas = OpKind::Cas { expect: 1, new: 2 };
        check(
            OpKind::Read,
            Ok(Done::Read(Some(5))),
            Outcome::Ok { read: Some(5) },
        );
        check(cas, Ok(Done::Compared(true)), Outcome::Ok { read: None });
        check(cas, Ok(Done::Compared(false)), Outcome::Fail);
        check(cas, Err(OpError::Definite("bad".into())), Outcome::Fail);
        check(
            cas,
            Err(OpError::Indeterminate("timeout".into())),
            Outcome::Info,
        );
        check(
            OpKind::Write(3),
            Err(OpError::Indeterminate("reset".into())),
            Outcome::Info,
        );
        check(
            OpKind::Read,
            Err(OpError::Definite("bad".into())),
            Outcome::Info,
        );
    }

    #[test]
    fn an_indeterminate_op_makes_the_client_a_new_process() {
        let mut c = client();
        let before = c.process(4);
        c.known.insert(0, 9);
        learn(
            &mut c,
            0,
            OpKind::Write(7),
            &Err(OpError::Indeterminate("x".into())),
        );
        assert_ne!(c.process(4), before);
        assert!(c.conn.is_none() && c.known.is_empty());
    }

    #[test]
    fn compare_and_set_only_expects_a_value_the_client_saw() {
        let mut c = client();
        for _ in 0..200 {
            assert!(!matches!(choose_op(&mut c, 0, 4), OpKind::Cas { .. }));
        }
        c.known.insert(0, 42);
        let expects: Vec<Value> = (0..200)
            .filter_map(|_| match choose_op(&mut c, 0, 4) {
                OpKind::Cas { expect, .. } => Some(expect),
                _ => None,
            })
            .collect();
        assert!(!expects.is_empty());
        assert!(expects.iter().all(|&e| e == 42));
    }
}
