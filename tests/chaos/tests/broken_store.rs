//! Both checkers against the real HTTP stack, in process: `berth_apiserver::router` served
//! over TLS by `serve_https`, driven by the chaos workload's clients (8 clients on one key,
//! TTL 1 s for even clients and 2 s for odd ones). On a store that skips the compare-and-set
//! (its `put` ignores the expected version and waits a little between the service's read and
//! its own write, so concurrent acquirers all see the lease free) both
//! [`berth_chaos::history::check`] and [`berth_chaos::linear::check`] must report violations;
//! on the correct `MemStore` neither may.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_apiserver::auth::Authenticator;
use berth_apiserver::metrics::Metrics;
use berth_apiserver::server::{serve_https, wait_shutdown};
use berth_apiserver::tls::TlsFiles;
use berth_apiserver::{AppState, router};
use berth_chaos::history::{self, History};
use berth_chaos::linear;
use berth_chaos::pki::Pki;
use berth_chaos::workload::{ClientTask, Workload, run_client};
use berth_core::store::{
    DynLeaseStore, Expect, LeaseRecord, LeaseStore, ListParams, StoreError, Version, Versioned,
};
use berth_core::{LeaseKey, MemStore, SystemClock, TtlBounds};
use tokio::sync::watch;

const NAMESPACE: &str = "broken";
const CLIENTS: u32 = 8;
const RUN: Duration = Duration::from_secs(5);

/// A `MemStore` whose `put` ignores `Expect`: it writes over whatever is there after a pause,
/// so two acquirers that both read the lease free are both granted. Test-only; no flag of the
/// server can build it.
#[derive(Debug, Default)]
struct NoCasStore {
    inner: MemStore,
}

/// The pause between the service's read and the write: wide enough that waiting acquirers
/// race into it.
const WRITE_DELAY: Duration = Duration::from_millis(60);

#[async_trait::async_trait]
impl LeaseStore for NoCasStore {
    fn backend(&self) -> &'static str {
        "mem"
    }

    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        self.inner.list(params).await
    }

    async fn put(&self, record: &LeaseRecord, _expect: Expect) -> Result<Version, StoreError> {
        tokio::time::sleep(WRITE_DELAY).await;
        // Whatever is there now is overwritten: the caller's precondition is never checked.
        let expect = match self.inner.get(&record.key).await? {
            Some(current) => Expect::Version(current.version),
            None => Expect::Absent,
        };
        self.inner.put(record, expect).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag).expect(flag);
    &args[i + 1]
}

struct Run {
    history: History,
    finals: BTreeMap<String, i64>,
}

/// Serves `store` in process over TLS and runs the workload against it for [`RUN`].
async fn run(store: DynLeaseStore, seed: u64) -> Run {
    let pki = Pki::new().expect("pki");
    let tls = TlsFiles {
        cert: arg_after(&pki.server_args, "--tls-cert-file").into(),
        key: arg_after(&pki.server_args, "--tls-key-file").into(),
    }
    .load()
    .expect("tls config");
    let state = AppState::new(
        store,
        Arc::new(SystemClock::new()),
        TtlBounds::default(),
        Authenticator::None,
        Arc::new(Metrics::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("https://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(serve_https(
        listener,
        router(state),
        tls,
        wait_shutdown(stopped),
        Duration::from_secs(1),
    ));

    let origin = Instant::now();
    let until = origin + RUN;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let work = Workload {
                namespace: NAMESPACE.to_owned(),
                keys: vec!["k0".to_owned()],
                ttl: Duration::from_secs(if id % 2 == 0 { 1 } else { 2 }),
                stall_probability: 0.0,
            };
            let client = pki.client(&base, Duration::from_secs(5)).expect("client");
            tokio::spawn(run_client(ClientTask {
                id,
                replicas: vec![client],
                work,
                origin,
                until,
                seed,
            }))
        })
        .collect();
    let mut history = History::new();
    for t in tasks {
        for (op, _) in t.await.expect("client task").ops {
            history.push(op);
        }
    }
    let reader = pki.client(&base, Duration::from_secs(5)).expect("client");
    let mut finals = BTreeMap::new();
    if let Some(status) = reader.get(NAMESPACE, "k0").await.expect("final read") {
        finals.insert(format!("{NAMESPACE}/k0"), status.fencing_token);
    }
    stop.send(true).expect("stop");
    server.await.expect("server task").expect("server");
    Run { history, finals }
}

fn summary(name: &str, run: &Run) -> (Vec<history::Violation>, linear::LinearReport) {
    let counts = run.history.result_counts();
    let violations = history::check(&run.history, &run.finals);
    let started = Instant::now();
    let report = linear::check(&run.history);
    println!(
        "{name}: operations {} (granted {}, denied {}, lost {}, released {}, conflict {}, \
         unknown {}); final tokens {:?}; history violations {}; linearizability checked in {} \
         ms:\n{report}",
        run.history.ops.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        counts[5],
        run.finals,
        violations.len(),
        started.elapsed().as_millis()
    );
    assert!(counts[0] > 5, "{name}: too few grants to mean anything");
    (violations, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_compare_and_set_is_caught_by_both_checkers() {
    let run = run(Arc::new(NoCasStore::default()), 0xB40C_0001).await;
    let (violations, report) = summary("no-cas store", &run);
    for v in violations.iter().take(3) {
        println!("{v}");
    }
    assert!(
        !violations.is_empty(),
        "history::check found nothing on a store without compare-and-set"
    );
    assert!(
        report.failures().count() >= 1,
        "linear::check found nothing on a store without compare-and-set:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_store_passes_both_checkers() {
    let run = run(Arc::new(MemStore::new()), 0xB40C_0001).await;
    let (violations, report) = summary("mem store", &run);
    for v in &violations {
        println!("{v}");
    }
    assert!(violations.is_empty(), "history::check on the correct store");
    assert!(
        report.is_linearizable(),
        "linear::check on the correct store:\n{report}"
    );
}
