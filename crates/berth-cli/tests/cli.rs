//! The real `berth` binary against a real `berth-apiserver` process over TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test scaffolding: a failure is a test failure

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn apiserver_bin() -> PathBuf {
    let path = Path::new(BERTH).with_file_name("berth-apiserver");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p berth-apiserver`",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `berth-apiserver`, killed on drop.
struct Server {
    child: Child,
    url: String,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(args: &[&str], port: u16, log: PathBuf) -> Self {
        let metrics = free_port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(apiserver_bin())
            .args(args)
            .args(["--listen-addr", &format!("127.0.0.1:{port}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let server = Self {
            child,
            url: format!("https://127.0.0.1:{port}"),
            port,
            log,
        };
        server.wait_listening(port);
        server
    }

    /// `--dev` in `dir/.berth-dev`: mem store, no auth, generated CA and config.json.
    fn dev(dir: &Path) -> Self {
        Self::dev_on(dir, free_port())
    }

    /// `--dev` on a given port (to restart a server where clients expect it).
    fn dev_on(dir: &Path, port: u16) -> Self {
        let dev_dir = dir.join(".berth-dev");
        let server = Self::start(
            &["--dev", "--dev-dir", dev_dir.to_str().unwrap()],
            port,
            dir.join("server.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dev_dir.join("config.json").is_file() {
            assert!(Instant::now() < deadline, "dev server wrote no config.json");
            sleep(Duration::from_millis(50));
        }
        server
    }

    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "berth-apiserver did not listen; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `berth` with a clean environment (no inherited `BERTH_*`), run in `cwd`.
fn berth(cwd: &Path) -> Command {
    let mut cmd = Command::new(BERTH);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(cwd);
    cmd
}

fn dev_berth(dir: &Path) -> Command {
    let mut cmd = berth(dir);
    cmd.env("BERTH_CONFIG", dir.join(".berth-dev/config.json"));
    cmd
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[track_caller]
fn run_code(cmd: &mut Command, code: i32) -> Output {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_prints_the_crate_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(berth(dir.path()).arg("version"));
    assert_eq!(out, format!("berth {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn lease_lifecycle_in_json_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::dev(dir.path());
    let d = dir.path();

    let acquired = json(&run_ok(dev_berth(d).args([
        "lease",
        "acquire",
        "team-a/db",
        "--holder",
        "east",
        "--ttl",
        "30s",
        "-o",
        "json",
    ])));
    assert_eq!(acquired["acquired"], true);
    assert_eq!(acquired["holder"], "east");
    assert_eq!(acquired["fencingToken"], 1);
    assert!(acquired["ttlRemainingMillis"].as_i64().unwrap() > 29_000);

    // Someone else is denied: exit 3, the current holder on stdout, one error line on stderr.
    let out = run_code(
        dev_berth(d).args([
            "lease",
            "acquire",
            "team-a/db",
            "--holder",
            "west",
            "-o",
            "json",
        ]),
        3,
    );
    let denied = json(&String::from_utf8(out.stdout.clone()).unwrap());
    assert_eq!(denied["acquired"], false);
    assert_eq!(denied["holder"], "east");
    assert_eq!(
        stderr(&out),
        "error: lease team-a/db is held by east with fencing token 1\n"
    );

    // Table output of a denial.
    let out = run_code(
        dev_berth(d).args(["lease", "acquire", "team-a/db", "--holder", "west"]),
        3,
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE   NAME   ACQUIRED   HOLDER   TOKEN"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("team-a      db     false      east     1"),
        "{table}"
    );

    let renewed = json(&run_ok(dev_berth(d).args([
        "lease",
        "renew",
        "team-a/db",
        "--holder",
        "east",
        "--token",
        "1",
        "--ttl",
        "1m",
        "-o",
        "json",
    ])));
    assert_eq!(renewed["acquired"], true);
    assert!(renewed["ttlRemainingMillis"].as_i64().unwrap() > 59_000);

    // A renew with the wrong token is refused: exit 3.
    let out = run_code(
        dev_berth(d).args([
            "lease",
            "renew",
            "team-a/db",
            "--holder",
            "east",
            "--token",
            "2",
            "-o",
            "json",
        ]),
        3,
    );
    assert!(
        stderr(&out).starts_with("error: renew refused"),
        "{}",
        stderr(&out)
    );

    let status = json(&run_ok(dev_berth(d).args([
        "lease",
        "get",
        "team-a/db",
        "-o",
        "json",
    ])));
    assert_eq!(status["state"], "held");
    assert_eq!(status["ttlSeconds"], 60);

    let yaml = run_ok(dev_berth(d).args(["lease", "get", "team-a/db", "-o", "yaml"]));
    assert!(yaml.contains("state: held\n"), "{yaml}");

    for name in ["b", "c"] {
        run_ok(dev_berth(d).args([
            "lease",
            "acquire",
            &format!("team-b/{name}"),
            "--holder",
            "west",
        ]));
    }
    let table = run_ok(dev_berth(d).args(["lease", "list"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].starts_with("NAMESPACE   NAME   STATE"), "{table}");
    assert!(
        rows[1].starts_with("team-a      db     held    east"),
        "{table}"
    );

    let all = json(&run_ok(dev_berth(d).args([
        "lease",
        "list",
        "--limit",
        "1",
        "--all-pages",
        "-o",
        "json",
    ])));
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert!(all.get("continue").is_none());

    let page =
        json(&run_ok(dev_berth(d).args([
            "lease", "list", "team-b", "--limit", "1", "-o", "json",
        ])));
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["continue"].is_string());

    let by_holder = json(&run_ok(
        dev_berth(d).args(["lease", "list", "--holder", "east", "-o", "json"]),
    ));
    assert_eq!(by_holder["items"].as_array().unwrap().len(), 1);

    let out = run_code(
        dev_berth(d).args([
            "lease",
            "release",
            "team-a/db",
            "--holder",
            "west",
            "--token",
            "1",
        ]),
        3,
    );
    assert_eq!(
        stderr(&out),
        "error: cannot release lease team-a/db: lease held by another identity or token\n"
    );
    let out = run_ok(dev_berth(d).args([
        "lease",
        "release",
        "team-a/db",
        "--holder",
        "east",
        "--token",
        "1",
    ]));
    assert_eq!(out, "lease team-a/db released\n");

    let status = json(&run_ok(dev_berth(d).args([
        "lease",
        "get",
        "team-a/db",
        "-o",
        "json",
    ])));
    assert_eq!(status["state"], "released");
    assert_eq!(status["fencingToken"], 1);

    let out = run_code(dev_berth(d).args(["lease", "get", "team-a/none"]), 1);
    assert_eq!(stderr(&out), "error: lease team-a/none not found\n");

    // The next holder gets the next fencing token.
    let next = json(&run_ok(dev_berth(d).args([
        "lease",
        "acquire",
        "team-a/db",
        "--holder",
        "west",
        "-o",
        "json",
    ])));
    assert_eq!(next["fencingToken"], 2);
}

#[test]
fn dev_config_is_found_by_env_and_by_default_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());

    // BERTH_CONFIG from anywhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = berth(elsewhere.path());
    cmd.env("BERTH_CONFIG", dir.path().join(".berth-dev/config.json"));
    run_ok(cmd.args(["lease", "acquire", "ns/a", "--holder", "h"]));

    // ./.berth-dev/config.json in the working directory.
    run_ok(berth(dir.path()).args(["lease", "get", "ns/a"]));

    // Without any config there is no server to talk to: one clear line, exit 1.
    let out = run_code(berth(elsewhere.path()).args(["lease", "get", "ns/a"]), 1);
    assert_eq!(
        stderr(&out),
        "error: no API server: set --server, BERTH_SERVER or `server` in a config file\n"
    );

    // A flag beats the config file: an unreachable --server fails.
    let dead = format!("https://127.0.0.1:{}", free_port());
    let out = run_code(
        berth(dir.path()).args(["lease", "get", "ns/a", "--server", &dead]),
        1,
    );
    assert!(
        stderr(&out).starts_with("error: could not reach the berth api server"),
        "{}",
        stderr(&out)
    );

    // Without the CA file the server's certificate is not trusted.
    let out = run_code(
        berth(elsewhere.path()).args(["lease", "get", "ns/a", "--server", &server.url]),
        1,
    );
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
}

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let pki = Pki {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

#[test]
fn static_keys_token_file_and_foreign_holder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = make_pki(d, &["berth.test"]);
    let token = "s3cret-token-for-team-a";
    let keys = d.join("keys");
    std::fs::write(
        &keys,
        format!(
            "# key-id:sha256\nteam-a:{}\n",
            hex::encode(Sha256::digest(token))
        ),
    )
    .unwrap();
    let token_file = d.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();

    let port = free_port();
    let server = Server::start(
        &[
            "--store-backend",
            "mem",
            "--auth-mode",
            "static-keys",
            "--api-keys-file",
            keys.to_str().unwrap(),
            "--tls-cert-file",
            pki.cert.to_str().unwrap(),
            "--tls-key-file",
            pki.key.to_str().unwrap(),
        ],
        port,
        d.join("server.log"),
    );

    let authed = || {
        let mut cmd = berth(d);
        cmd.env("BERTH_SERVER", &server.url)
            .env("BERTH_CA_FILE", &pki.ca)
            .env("BERTH_SERVER_NAME", "berth.test");
        cmd
    };

    let granted = json(&run_ok(authed().args([
        "--token-file",
        token_file.to_str().unwrap(),
        "lease",
        "acquire",
        "prod/job",
        "--holder",
        "team-a/worker-1",
        "-o",
        "json",
    ])));
    assert_eq!(granted["acquired"], true);

    // The token from the environment works too.
    let mut cmd = authed();
    cmd.env("BERTH_TOKEN", token);
    run_ok(cmd.args(["lease", "get", "prod/job"]));

    // A holder outside the key's tenant is forbidden.
    let out = run_code(
        authed().args([
            "--token-file",
            token_file.to_str().unwrap(),
            "lease",
            "acquire",
            "prod/job",
            "--holder",
            "team-b",
        ]),
        1,
    );
    assert_eq!(
        stderr(&out),
        "error: forbidden (403): holder not authorized for this identity\n"
    );

    // No token, or a wrong one: 401.
    let out = run_code(
        authed().args(["lease", "acquire", "prod/x", "--holder", "team-a"]),
        1,
    );
    assert!(
        stderr(&out).starts_with("error: unauthorized (401)"),
        "{}",
        stderr(&out)
    );
    let out = run_code(
        authed().args([
            "--token", "wrong", "lease", "acquire", "prod/x", "--holder", "team-a",
        ]),
        1,
    );
    assert!(
        stderr(&out).ends_with("\nerror: unauthorized (401): unauthorized\n"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).starts_with("berth: warning: --token is visible"));

    // The certificate names berth.test, not 127.0.0.1: without --server-name it fails.
    let mut cmd = authed();
    cmd.env_remove("BERTH_SERVER_NAME")
        .env("BERTH_TOKEN", token);
    let out = run_code(cmd.args(["lease", "get", "prod/job"]), 1);
    assert!(
        stderr(&out).contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_propagates_the_exit_code_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::dev(dir.path());
    let d = dir.path();
    let marker = d.join("ran");

    let out = run_code(
        dev_berth(d).args([
            "run",
            "--lease",
            "ops/backup",
            "--holder",
            "east",
            "--ttl",
            "5s",
            "--kill-grace",
            "1s",
            "--",
            "sh",
            "-c",
            &format!(
                "echo \"$BERTH_LEASE_KEY $BERTH_LEASE_HOLDER $BERTH_FENCING_TOKEN\" > {}; exit 7",
                marker.display()
            ),
        ]),
        7,
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ops/backup east 1\n",
        "stderr: {}",
        stderr(&out)
    );
    let status = json(&run_ok(dev_berth(d).args([
        "lease",
        "get",
        "ops/backup",
        "-o",
        "json",
    ])));
    assert_eq!(status["state"], "released");

    // Death by signal is 128 + N.
    run_code(
        dev_berth(d).args([
            "run",
            "--lease",
            "ops/backup",
            "--holder",
            "east",
            "--ttl",
            "5s",
            "--kill-grace",
            "1s",
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ]),
        143,
    );

    // Waiting: a lease held elsewhere with --wait-timeout ends with exit 3 and never runs CMD.
    run_ok(dev_berth(d).args([
        "lease", "acquire", "ops/held", "--holder", "west", "--ttl", "30s",
    ]));
    let out = run_code(
        dev_berth(d).args([
            "run",
            "--lease",
            "ops/held",
            "--holder",
            "east",
            "--wait-timeout",
            "1s",
            "--poll-interval",
            "200ms",
            "--",
            "sh",
            "-c",
            "exit 0",
        ]),
        3,
    );
    assert!(
        stderr(&out).contains("timed out after 1s waiting for lease ops/held"),
        "{}",
        stderr(&out)
    );

    // Usage errors are exit 2.
    run_code(
        dev_berth(d).args(["run", "--lease", "ops/x", "--ttl", "3s", "--", "true"]),
        2,
    );
}

/// Wall-clock nanoseconds, read through `date` so the test and the child use the same clock.
fn now_ns() -> u128 {
    let out = Command::new("date").arg("+%s%N").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn run_stops_the_command_when_the_server_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::dev(dir.path());
    let d = dir.path();
    let beats = d.join("beats");
    let ttl = Duration::from_secs(3);

    let script = format!(
        "trap 'echo term >> {b}; exit 143' TERM; while true; do date +%s%N >> {b}; sleep 0.05; done",
        b = beats.display()
    );
    let mut child = dev_berth(d)
        .args([
            "run",
            "--lease",
            "ops/singleton",
            "--holder",
            "east",
            "--ttl",
            "3s",
            "--kill-grace",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Once the command runs, let it hold the lease through a few renewals (every second).
    wait_for_file(&beats);
    sleep(Duration::from_millis(2000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "berth run exited early"
    );
    server.kill();
    let killed_at = now_ns();

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "berth run did not stop the command"
        );
        sleep(Duration::from_millis(50));
    };
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(4), "stderr: {err}");
    assert!(
        err.ends_with(
            "error: lease ops/singleton could not be renewed before it could expire; the command was stopped\n"
        ),
        "{err}"
    );
    assert!(
        err.contains("retrying until answered or until the grant has expired (at most 3s)")
            && err.contains("lease ops/singleton was not released; it has expired on its own"),
        "the unanswered release is sent again until the grant expired: {err}"
    );

    let text = std::fs::read_to_string(&beats).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"term"),
        "the command got SIGTERM: {text}"
    );
    let stamps: Vec<u128> = lines.iter().filter_map(|l| l.parse().ok()).collect();
    let last_beat = *stamps.last().unwrap();
    assert!(
        stamps.iter().any(|s| *s >= killed_at - 500_000_000),
        "the command ran until the server died"
    );
    // The last successful renew was sent before the kill, so the lease lasts at most until
    // killed_at + ttl; the command must be gone before that.
    let limit = killed_at + ttl.as_nanos();
    assert!(
        last_beat < limit,
        "last beat {} ms after the kill, ttl {} ms",
        (last_beat - killed_at) / 1_000_000,
        ttl.as_millis()
    );
    eprintln!(
        "command stopped {} ms after the server died (ttl {} ms, kill grace 1000 ms)",
        last_beat.saturating_sub(killed_at) / 1_000_000,
        ttl.as_millis()
    );
}

#[test]
fn run_sends_an_unanswered_release_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let mut server = Server::dev_on(d, port);
    let started = d.join("started");
    let script = format!("touch {}; sleep 2", started.display());
    let mut child = dev_berth(d)
        .args([
            "run",
            "--lease",
            "ops/retry",
            "--holder",
            "east",
            "--ttl",
            "8s",
            "--kill-grace",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&started);
    // The server is gone when the command ends and the release is sent, and back 1.5 s later.
    server.kill();
    sleep(Duration::from_millis(3500));
    let _server = Server::dev_on(d, port);
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(
        err.contains("berth: warning: failed to release lease ops/retry")
            && err.contains("retrying until answered or until the grant has expired (at most 8s)"),
        "{err}"
    );
    assert!(err.ends_with("berth: released lease ops/retry\n"), "{err}");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "berth did not exit in {within:?}"
        );
        sleep(Duration::from_millis(50));
    }
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.is_file() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_forwards_sigterm_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::dev(dir.path());
    let d = dir.path();
    let started = d.join("started");
    let got = d.join("got-term");
    let script = format!(
        "trap 'touch {g}; exit 0' TERM; touch {s}; while true; do sleep 0.05; done",
        g = got.display(),
        s = started.display()
    );
    let mut child = dev_berth(d)
        .args([
            "run",
            "--lease",
            "ops/fwd",
            "--holder",
            "east",
            "--ttl",
            "10s",
            "--kill-grace",
            "2s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&started);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The command handled SIGTERM and exited 0, so berth exits 0 too.
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
    assert!(got.is_file(), "the command never saw SIGTERM");
    let lease = json(&run_ok(
        dev_berth(d).args(["lease", "get", "ops/fwd", "-o", "json"]),
    ));
    assert_eq!(lease["state"], "released");
}

#[test]
fn run_stops_the_command_when_the_lease_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut server = Server::dev(d);
    let started = d.join("started");
    let got = d.join("got-term");
    let script = format!(
        "trap 'touch {g}; exit 0' TERM; touch {s}; while true; do sleep 0.05; done",
        g = got.display(),
        s = started.display()
    );
    let mut child = dev_berth(d)
        .args([
            "run",
            "--lease",
            "ops/lost",
            "--holder",
            "east",
            "--ttl",
            "6s",
            "--kill-grace",
            "1s",
            "--renew-interval",
            "500ms",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&started);
    // A restarted mem server has forgotten the lease: the next renew is refused.
    let port = server.port;
    server.kill();
    let _restarted = Server::dev_on(d, port);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(got.is_file(), "the command never saw SIGTERM");
    assert!(
        err.contains("berth: lease ops/lost is no longer held by east; stopping the command"),
        "{err}"
    );
    assert!(
        err.ends_with("error: lease ops/lost was lost (renew refused); the command was stopped\n"),
        "{err}"
    );
}

#[test]
fn acquire_wait_gets_the_lease_once_released() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::dev(dir.path());
    let d = dir.path();
    run_ok(dev_berth(d).args([
        "lease", "acquire", "ops/w", "--holder", "west", "--ttl", "30s",
    ]));

    // --wait-timeout gives up with exit 3.
    let out = run_code(
        dev_berth(d).args([
            "lease",
            "acquire",
            "ops/w",
            "--holder",
            "east",
            "--wait",
            "--wait-timeout",
            "500ms",
            "--poll-interval",
            "100ms",
        ]),
        3,
    );
    assert!(
        stderr(&out).ends_with(
            "error: timed out after 500ms waiting for lease ops/w (held by west with fencing token 1)\n"
        ),
        "{}",
        stderr(&out)
    );

    let waiter = dev_berth(d)
        .args([
            "lease",
            "acquire",
            "ops/w",
            "--holder",
            "east",
            "--wait",
            "--poll-interval",
            "100ms",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(500));
    run_ok(dev_berth(d).args([
        "lease", "release", "ops/w", "--holder", "west", "--token", "1",
    ]));
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let granted = json(&String::from_utf8(out.stdout.clone()).unwrap());
    assert_eq!(granted["holder"], "east");
    assert_eq!(granted["fencingToken"], 2);
    // Not a terminal: one progress line instead of a spinner.
    assert_eq!(
        stderr(&out),
        "waiting for lease ops/w (held by west with fencing token 1)\n"
    );
}

#[test]
fn lease_watch_prints_changes_until_free() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let _server = Server::dev(d);
    run_ok(dev_berth(d).args(["lease", "acquire", "watch/pre", "--holder", "east"]));

    let mut child = dev_berth(d)
        .args([
            "lease",
            "watch",
            "watch/job",
            "--until",
            "free",
            "--stop-after",
            "30s",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || json(&lines.next().expect("a line").unwrap());
    // job does not exist yet: the initial state is empty.
    assert_eq!(next()["type"], "synced");
    let acquired = json(&run_ok(dev_berth(d).args([
        "lease",
        "acquire",
        "watch/job",
        "--holder",
        "east",
        "-o",
        "json",
    ])));
    let e = next();
    assert_eq!(e["type"], "acquired");
    assert_eq!(e["lease"]["holder"], "east");
    assert_eq!(e["lease"]["fencingToken"], acquired["fencingToken"]);
    run_ok(dev_berth(d).args([
        "lease",
        "release",
        "watch/job",
        "--holder",
        "east",
        "--token",
        "1",
    ]));
    let e = next();
    assert_eq!(e["type"], "released");
    assert_eq!(e["lease"]["state"], "released");
    let status = child.wait().unwrap();
    assert!(status.success(), "--until free exits 0 at the release");

    // A namespace watch in table form shows the current state first.
    let out = run_code(
        dev_berth(d).args([
            "lease",
            "watch",
            "watch",
            "--until",
            "acquired",
            "--stop-after",
            "1s",
        ]),
        3,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("initial")
            && l.contains("watch/pre")
            && l.contains("holder=east")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("initial")
            && l.contains("watch/job")
            && l.contains("state=released")),
        "{text}"
    );
    // Bad targets are usage errors.
    run_code(dev_berth(d).args(["lease", "watch", "a/b/c"]), 2);
}
