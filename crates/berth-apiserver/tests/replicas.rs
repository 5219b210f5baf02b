//! The SQL store through real `berth-apiserver` processes:
//! - two replicas on one PostgreSQL (and one MariaDB) database, 32 clients racing to acquire,
//!   renew and release a handful of keys through both (`support/race.rs`): no two live
//!   holders at any moment (the database clock is the one time source, so no overlap of the
//!   clients' claims is allowed at all), fencing tokens strictly increasing per key, every
//!   acknowledged grant visible afterwards;
//! - `kill -9` between acknowledged writes on SQLite, PostgreSQL and MariaDB: after a restart
//!   every acknowledged lease is there with its token, and new grants get higher tokens;
//! - bad SQL configuration exits non-zero with one clear line.
//!
//! PostgreSQL and MariaDB come from `BERTH_TEST_POSTGRES_DSN` / `BERTH_TEST_MYSQL_DSN`
//! (`hack/sql-test-env.sh` prints them); each test creates and drops its own database. Without
//! them those tests print a skip line, or fail with `BERTH_REQUIRE_INTEGRATION=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use berth_client::Client;
use support::race::{Claim, Denial, Grant, Outcome, check_history};
use support::{Apiserver, Engine, Pki, TestDb, plain_lines, run_to_exit};

// ---------------------------------------------------------------------------------------------
// Two replicas, 32 racing clients.

/// The history checker itself: it accepts a clean hand-over, measures an overlap within the
/// allowed margin, and rejects a longer overlap, a token granted to two holders, a token that
/// goes backwards, and a denial that names the wrong holder.
#[test]
fn history_checker_rejects_unsafe_histories() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let grant = |token: i64, holder: &str, send: u64, ack: u64| Grant {
        key: 0,
        token,
        holder: holder.to_owned(),
        send: at(send),
        ack: at(ack),
    };
    let claim = |token: i64, holder: &str, start: u64, end: u64| Claim {
        key: 0,
        token,
        holder: holder.to_owned(),
        start: at(start),
        end: at(end),
    };
    let clean = || Outcome {
        grants: vec![grant(1, "a", 0, 10), grant(2, "b", 990, 1_020)],
        claims: vec![claim(1, "a", 10, 1_000), claim(2, "b", 1_020, 2_000)],
        denials: vec![Denial {
            key: 0,
            holder: "a".to_owned(),
            token: 1,
        }],
        ..Outcome::default()
    };
    let verdict = check_history(&clean(), Duration::ZERO).unwrap();
    assert_eq!(verdict.high.get(&0), Some(&2));
    assert_eq!(verdict.max_overlap, Duration::ZERO);
    // An overlap within the allowed margin passes and is measured.
    let mut slight = clean();
    slight.claims[0].end = at(1_025);
    let verdict = check_history(&slight, Duration::from_millis(5)).unwrap();
    assert_eq!(verdict.max_overlap, Duration::from_millis(5));

    let mut overlap = clean();
    overlap.claims[0].end = at(1_030);
    let mut repeated = clean();
    repeated.grants[1].token = 1;
    let mut backwards = clean();
    backwards.grants[1].token = 0;
    let mut misreported = clean();
    misreported.denials[0].holder = "c".to_owned();
    for (history, want) in [
        (
            overlap,
            "two live holders: a (token 1) relied on the lease until 10ms after b",
        ),
        (repeated, "key 0 token 1 granted to a and to b"),
        (
            backwards,
            "grant of token 0 to b was requested after token 1 had been acknowledged",
        ),
        (
            misreported,
            "reported token 1 with holder c, but it was granted to a",
        ),
    ] {
        let verdict = check_history(&history, Duration::from_millis(5)).unwrap_err();
        assert!(verdict.contains(want), "{verdict:?} does not say {want:?}");
    }
}

async fn race_two_replicas(engine: Engine, test: &str) {
    let Some(db) = TestDb::create(engine, test).await else {
        return;
    };
    let pki = Pki::new();
    let mut args = db.store_args("auto");
    args.extend(
        [
            "--min-ttl",
            "1s",
            "--sweep-interval",
            "1s",
            "--sweep-grace",
            "2s",
        ]
        .map(String::from),
    );
    // One after the other, so the second finds the schema migrated.
    let a = Apiserver::start("replica-a", &pki, &args).await;
    let b = Apiserver::start("replica-b", &pki, &args).await;

    // One time source, the database's clock: no overlap at all is allowed.
    support::race::race(test, &a, &b, |_, _| Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_32_racing_clients() {
    race_two_replicas(Engine::Postgres, "postgres_two_replicas_32_racing_clients").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_two_replicas_32_racing_clients() {
    race_two_replicas(Engine::Mysql, "mysql_two_replicas_32_racing_clients").await;
}

// ---------------------------------------------------------------------------------------------
// kill -9 between acknowledged writes.

const WRITERS: usize = 4;
const CRASH_NS: &str = "crash";

/// Writer `w`: for `k0`, `k1`, … acquires, releases and acquires again (token 2), reporting
/// each acknowledged second grant, until the server dies.
async fn writer(w: usize, c: Client, acks: tokio::sync::mpsc::UnboundedSender<(String, i64)>) {
    let holder = format!("writer-{w}");
    let hour = Duration::from_secs(3600);
    for i in 0.. {
        let name = format!("w{w}-k{i}");
        let Ok(first) = c.acquire(CRASH_NS, &name, &holder, hour).await else {
            return;
        };
        assert!(first.acquired);
        if c.release(CRASH_NS, &name, &holder, first.fencing_token)
            .await
            .is_err()
        {
            return;
        }
        let Ok(second) = c.acquire(CRASH_NS, &name, &holder, hour).await else {
            return;
        };
        assert!(second.acquired);
        assert_eq!(second.fencing_token, first.fencing_token + 1);
        if acks.send((name, second.fencing_token)).is_err() {
            return;
        }
    }
}

/// Starts a server on `store_args`, kills it with SIGKILL while writers are busy once at least
/// `min_acks` grants are acknowledged, restarts it on `restart_args`, and checks every
/// acknowledged lease and that new grants get higher tokens.
async fn kill_9_and_restart(test: &str, store_args: &[String], restart_args: &[String]) {
    const MIN_ACKS: usize = 60;
    let pki = Pki::new();
    let mut server = Apiserver::start("before-crash", &pki, store_args).await;
    let c = server.client_with_timeout(Duration::from_secs(10));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, c.clone(), tx.clone())))
        .collect();
    drop(tx);
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.len() < MIN_ACKS {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(a)) => acked.push(a),
            _ => panic!(
                "{test}: only {} acknowledged grants before the deadline; log:\n{}",
                acked.len(),
                server.log_text()
            ),
        }
    }
    // The writers are mid-request: kill the server under them.
    let status = server.kill9();
    assert!(!status.success());
    for w in writers {
        w.await.expect("writer task");
    }
    // Grants acknowledged in the moment before the kill count too.
    while let Ok(a) = rx.try_recv() {
        acked.push(a);
    }
    drop(server);

    let server = Apiserver::start("after-crash", &pki, restart_args).await;
    let c = server.client();
    for (name, token) in &acked {
        let s = c
            .get(CRASH_NS, name)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{test}: acknowledged lease {name} is gone"));
        assert_eq!(s.fencing_token, *token, "{test}: {name} kept its token");
        assert_eq!(s.holder, format!("writer-{}", &name[1..2]));
        assert_eq!(s.state, berth_api::LeaseState::Held, "{test}: {name}");
    }
    // After the crash every new grant gets a higher token than any before it.
    for (name, token) in &acked {
        let w = &name[1..2];
        c.release(CRASH_NS, name, &format!("writer-{w}"), *token)
            .await
            .expect("release after restart");
        let r = c
            .acquire(CRASH_NS, name, "after", Duration::from_secs(60))
            .await
            .expect("acquire after restart");
        assert!(r.acquired);
        assert!(
            r.fencing_token > *token,
            "{test}: {name}: token {} after the crash, {token} before",
            r.fencing_token
        );
    }
    // Keys whose grants were in flight at the kill: whatever state they were left in, the
    // next grant's token is higher than any they can have had.
    for w in 0..WRITERS {
        let next = acked
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("w{w}-")))
            .count();
        let name = format!("w{w}-k{next}");
        let before = c.get(CRASH_NS, &name).await.expect("get").map(|s| {
            if s.state == berth_api::LeaseState::Held {
                let h = s.holder.clone();
                (s.fencing_token, Some(h))
            } else {
                (s.fencing_token, None)
            }
        });
        if let Some((token, Some(holder))) = &before {
            c.release(CRASH_NS, &name, holder, *token)
                .await
                .expect("release the in-flight key");
        }
        let r = c
            .acquire(CRASH_NS, &name, "after", Duration::from_secs(60))
            .await
            .expect("acquire the in-flight key");
        assert!(r.acquired);
        let old = before.map_or(0, |(t, _)| t);
        assert!(r.fencing_token > old);
    }
    println!(
        "{test}: {} acknowledged grants before kill -9, all present with their tokens after restart",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_keeps_acknowledged_leases() {
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!("sqlite://{}", dir.path().join("berth.db").display());
    let args: Vec<String> = [
        "--store-backend",
        "sql",
        "--sql-driver",
        "sqlite",
        "--sql-dsn",
        &dsn,
    ]
    .map(String::from)
    .to_vec();
    kill_9_and_restart("sqlite_kill_9_keeps_acknowledged_leases", &args, &args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_keeps_acknowledged_leases() {
    let test = "postgres_kill_9_keeps_acknowledged_leases";
    if let Some(db) = TestDb::create(Engine::Postgres, test).await {
        kill_9_and_restart(test, &db.store_args("auto"), &db.store_args("off")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_kill_9_keeps_acknowledged_leases() {
    let test = "mysql_kill_9_keeps_acknowledged_leases";
    if let Some(db) = TestDb::create(Engine::Mysql, test).await {
        kill_9_and_restart(test, &db.store_args("auto"), &db.store_args("off")).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Bad configuration: non-zero exit, one clear line. (`tests/binary.rs` covers a missing
// --sql-driver and an unreachable PostgreSQL.)

/// Runs the server with `args` (TLS flags and no auth added) and returns the exit code and the
/// single non-JSON line of its stderr, which must name `want`.
fn fails_with(pki: &Pki, args: &[String], want: &str) -> (Option<i32>, String) {
    let mut all = pki.server_args();
    all.extend_from_slice(args);
    let (code, stderr) = run_to_exit(&all);
    assert_ne!(code, Some(0), "{args:?} must fail; stderr:\n{stderr}");
    let lines = plain_lines(&stderr);
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one plain line expected; stderr:\n{stderr}"
    );
    assert!(
        lines[0].contains(want),
        "{args:?}: {want:?} not in {:?}",
        lines[0]
    );
    (code, lines[0].to_owned())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn wrong_driver_is_rejected_with_one_line() {
    let pki = Pki::new();
    // Not a driver at all: a usage error (exit 2).
    let mut all = pki.server_args();
    all.extend(strings(&[
        "--store-backend",
        "sql",
        "--sql-driver",
        "oracle",
        "--sql-dsn",
        "oracle://x",
    ]));
    let (code, stderr) = run_to_exit(&all);
    assert_eq!(code, Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("invalid value 'oracle' for '--sql-driver"),
        "{stderr}"
    );
    // A real driver that does not fit the DSN.
    let (code, line) = fails_with(
        &pki,
        &strings(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "mysql",
            "--sql-dsn",
            "postgres://berth:hunter2@127.0.0.1:1/berth",
        ]),
        "mysql",
    );
    assert_eq!(code, Some(1));
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn unreadable_dsn_file_is_rejected_with_one_line() {
    let pki = Pki::new();
    let missing = pki.dir().join("missing-dsn");
    let (code, _) = fails_with(
        &pki,
        &strings(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "postgres",
            "--sql-dsn-file",
            &missing.display().to_string(),
        ]),
        &missing.display().to_string(),
    );
    assert_eq!(code, Some(1));
    // A directory where the file should be is unreadable even for root.
    let dir = pki.dir().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let (code, _) = fails_with(
        &pki,
        &strings(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "sqlite",
            "--sql-dsn-file",
            &dir.display().to_string(),
        ]),
        &dir.display().to_string(),
    );
    assert_eq!(code, Some(1));
    // Both a DSN and a DSN file: a usage error.
    let file = pki.dir().join("dsn");
    std::fs::write(&file, "sqlite:///tmp/x.db\n").unwrap();
    let mut all = pki.server_args();
    all.extend(strings(&[
        "--store-backend",
        "sql",
        "--sql-driver",
        "sqlite",
        "--sql-dsn",
        "sqlite:///tmp/y.db",
        "--sql-dsn-file",
        &file.display().to_string(),
    ]));
    let (code, stderr) = run_to_exit(&all);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .lines()
            .next()
            .unwrap_or_default()
            .contains("--sql-dsn")
    );
}

#[test]
fn unreachable_databases_are_rejected_with_one_line() {
    let pki = Pki::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, line) = fails_with(
        &pki,
        &strings(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "mysql",
            "--sql-dsn",
            &format!("mysql://berth:hunter2@127.0.0.1:{port}/berth"),
        ]),
        "failed to open the mysql store",
    );
    assert_eq!(code, Some(1));
    assert!(!line.contains("hunter2"), "{line}");
    // A SQLite file in a directory that does not exist.
    let (code, _) = fails_with(
        &pki,
        &strings(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "sqlite",
            "--sql-dsn",
            "sqlite:///nonexistent-berth-dir/berth.db",
        ]),
        "failed to open the sqlite store",
    );
    assert_eq!(code, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_on_one_sqlite_file_is_refused() {
    let pki = Pki::new();
    let dsn = format!("sqlite://{}", pki.dir().join("berth.db").display());
    let args = strings(&[
        "--store-backend",
        "sql",
        "--sql-driver",
        "sqlite",
        "--sql-dsn",
        &dsn,
    ]);
    let mut first = Apiserver::start("first", &pki, &args).await;
    let r = first
        .client()
        .acquire("ns", "a", "me", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(r.acquired);
    let (code, _) = tokio::task::spawn_blocking({
        let args = args.clone();
        let pki = Pki::new();
        move || fails_with(&pki, &args, "locked by another process")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1));
    assert!(first.is_running(), "the first replica keeps serving");
    let s = first.client().get("ns", "a").await.unwrap().unwrap();
    assert_eq!(s.holder, "me");
}

async fn schema_drift(engine: Engine, test: &str) {
    let Some(db) = TestDb::create(engine, test).await else {
        return;
    };
    let pki = Pki::new();
    // An empty database with --sql-migrate off.
    let (code, line) = tokio::task::spawn_blocking({
        let args = db.store_args("off");
        let pki = Pki::new();
        move || fails_with(&pki, &args, "--sql-migrate")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{line}");
    // Migrated, then a column dropped behind the server's back.
    let server = Apiserver::start("migrating", &pki, &db.store_args("auto")).await;
    drop(server);
    db.exec("ALTER TABLE berth_leases DROP COLUMN version")
        .await;
    let (code, line) = tokio::task::spawn_blocking({
        let args = db.store_args("off");
        move || fails_with(&pki, &args, "version")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{line}");
    println!("{test}: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_drift_with_migrate_off_is_rejected() {
    schema_drift(
        Engine::Postgres,
        "postgres_schema_drift_with_migrate_off_is_rejected",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_schema_drift_with_migrate_off_is_rejected() {
    schema_drift(
        Engine::Mysql,
        "mysql_schema_drift_with_migrate_off_is_rejected",
    )
    .await;
}

#[test]
fn sqlite_without_schema_and_migrate_off_is_rejected() {
    let pki = Pki::new();
    let dsn = format!("sqlite://{}", pki.dir().join("empty.db").display());
    let (code, line) = fails_with(
        &pki,
        &strings(&[
            "--store-backend",
            "sql",
            "--sql-driver",
            "sqlite",
            "--sql-dsn",
            &dsn,
            "--sql-migrate",
            "off",
        ]),
        "--sql-migrate",
    );
    assert_eq!(code, Some(1), "{line}");
}
