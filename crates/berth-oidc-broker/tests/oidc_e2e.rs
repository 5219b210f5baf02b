//! End to end against a real OpenID provider (`tests/oidc-provider`, on the npm package
//! `oidc-provider`): `berth-oidc-broker` fetches tokens and writes the token file, the `berth`
//! CLI reads it with `--token-file` and talks to `berth-apiserver --auth-mode oidc`.
//!
//! Needs `BERTH_TEST_OIDC_PROVIDER_DIR` (from `hack/oidc-test-env.sh`) and the `berth` and
//! `berth-apiserver` binaries built next to this crate's binary
//! (`cargo build -p berth-cli -p berth-apiserver -p berth-oidc-broker`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test scaffolding: a failure is a test failure

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

const BROKER: &str = env!("CARGO_BIN_EXE_berth-oidc-broker");
const AUDIENCE: &str = "https://berth.test";
const CLIENT_ID: &str = "team-a-ci";
const CLIENT_SECRET: &str = "s3cret-for-team-a";
/// Access-token lifetime at the provider; with `--refresh-skew 10s` the broker refreshes
/// every 2 s.
const TOKEN_TTL_SECS: u64 = 12;

/// The provider's installed directory, or `None` (skip) when the variable is unset.
fn provider_dir_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("BERTH_TEST_OIDC_PROVIDER_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            assert!(
                std::env::var("BERTH_REQUIRE_INTEGRATION").as_deref() != Ok("1"),
                "{test}: BERTH_TEST_OIDC_PROVIDER_DIR is not set and BERTH_REQUIRE_INTEGRATION=1; \
                 run `eval \"$(hack/oidc-test-env.sh)\"`"
            );
            eprintln!(
                "skipped: set BERTH_TEST_OIDC_PROVIDER_DIR (eval \"$(hack/oidc-test-env.sh)\") to run {test}"
            );
            None
        }
    }
}

fn sibling_bin(name: &str) -> PathBuf {
    let path = Path::new(BROKER).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p berth-cli -p berth-apiserver`",
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

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(100));
    }
}

/// A child process killed on drop, with its output in a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process ignored SIGTERM");
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test OpenID provider.
struct Provider {
    proc: Proc,
    issuer: String,
    port: u16,
}

impl Provider {
    fn start(dir: &Path, work: &Path, port: u16) -> Self {
        let config = work.join("provider.json");
        std::fs::write(
            &config,
            json!({
                "host": "127.0.0.1",
                "port": port,
                "audience": AUDIENCE,
                "accessTokenTTL": TOKEN_TTL_SECS,
                "keysFile": work.join("provider-keys.json"),
                "clients": [{
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "claims": { "berth_tenant": ["team-a", "team-z"], "groups": ["berth-users"] },
                }],
            })
            .to_string(),
        )
        .unwrap();
        let log = work.join("provider.log");
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("node must be installed (hack/oidc-test-env.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let proc = Proc { child, log };
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("provider did not start ({e}): {line}\n{}", proc.log()));
        Self {
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            port: u16::try_from(ready["port"].as_u64().unwrap()).unwrap(),
            proc,
        }
    }
}

/// A minimal HTTP/1.0 exchange on loopback: (status, body).
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("a JWT");
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["berth.test".to_owned()])
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

fn start_apiserver(work: &Path, issuer: &str, pki: &Pki) -> (Proc, String) {
    let port = free_port();
    let log = work.join("apiserver.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(sibling_bin("berth-apiserver"))
        .args(["--store-backend", "mem", "--auth-mode", "oidc"])
        .args(["--oidc-issuer-url", issuer, "--oidc-audience", AUDIENCE])
        .args(["--oidc-tenant-claim", "berth_tenant"])
        .args(["--oidc-required-claim", "groups=berth-users"])
        .args(["--oidc-discovery-timeout", "10s"])
        .args(["--tls-cert-file", pki.cert.to_str().unwrap()])
        .args(["--tls-key-file", pki.key.to_str().unwrap()])
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", ""])
        .args([
            "--log-format",
            "text",
            "--log-level",
            "info,berth_apiserver=debug",
        ])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let proc = Proc { child, log };
    wait_until("berth-apiserver to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (proc, format!("https://127.0.0.1:{port}"))
}

fn start_broker(work: &Path, issuer: &str, output: &Path, admin: u16) -> Proc {
    let secret = work.join("client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    let log = work.join("broker.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(BROKER)
        .env_clear()
        .args(["--oidc-issuer-url", issuer])
        .args(["--oidc-client-id", CLIENT_ID])
        .args(["--oidc-client-secret-file", secret.to_str().unwrap()])
        .args(["--oidc-audience", AUDIENCE, "--oidc-scopes", "berth"])
        .args(["--output", output.to_str().unwrap()])
        .args(["--refresh-skew", "10s", "--min-refresh-interval", "1s"])
        .args(["--max-retry-interval", "4s", "--fetch-timeout", "2s"])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--log-format", "text"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc { child, log }
}

/// `berth` with a clean environment pointed at the server, reading `token_file`.
fn berth(url: &str, pki: &Pki, token_file: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(sibling_bin("berth"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("BERTH_SERVER", url)
        .env("BERTH_CA_FILE", &pki.ca)
        .env("BERTH_SERVER_NAME", "berth.test")
        .arg("--token-file")
        .arg(token_file)
        .args(args)
        .output()
        .unwrap()
}

#[track_caller]
fn berth_json(url: &str, pki: &Pki, token_file: &Path, args: &[&str]) -> Value {
    let out = berth(url, pki, token_file, args);
    assert!(
        out.status.success(),
        "berth {args:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn broker_token_drives_the_cli_through_rotation_and_provider_outage() {
    let Some(dir) =
        provider_dir_or_skip("broker_token_drives_the_cli_through_rotation_and_provider_outage")
    else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut provider = Provider::start(&dir, w, 0);
    let pki = make_pki(w);
    let (server, url) = start_apiserver(w, &provider.issuer, &pki);
    let token_file = w.join("run").join("token");
    std::fs::create_dir(w.join("run")).unwrap();
    let admin = free_port();
    let mut broker = start_broker(w, &provider.issuer, &token_file, admin);
    let diag = |broker: &Proc, server: &Proc| {
        format!(
            "\n--- broker ---\n{}\n--- apiserver ---\n{}",
            broker.log(),
            server.log()
        )
    };

    // 1. The broker writes the raw access token, mode 0600, and turns ready.
    wait_until("the first token file", Duration::from_secs(20), || {
        token_file.is_file()
    });
    let first = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(first.split('.').count(), 3, "a raw JWT, no JSON: {first:?}");
    assert!(!first.ends_with('\n'));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let claims = jwt_part(&first, 1);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["iss"], provider.issuer.as_str());
    assert_eq!(claims["sub"], CLIENT_ID);
    wait_until("/readyz 200", Duration::from_secs(5), || {
        http(admin, "GET", "/readyz").is_some_and(|(s, _)| s == 200)
    });
    assert_eq!(http(admin, "GET", "/healthz").unwrap().0, 200);
    assert!(
        !broker.log().contains(&first),
        "the token never appears in the broker's log"
    );

    // 2. The CLI acquires under the tenant from the token's claim (first element of
    //    berth_tenant), not under the username (sub).
    let granted = berth_json(
        &url,
        &pki,
        &token_file,
        &[
            "lease",
            "acquire",
            "prod/job",
            "--holder",
            "team-a/worker-1",
            "--ttl",
            "1m",
            "-o",
            "json",
        ],
    );
    assert_eq!(granted["acquired"], true, "{}", diag(&broker, &server));
    assert_eq!(granted["holder"], "team-a/worker-1");
    let fencing = granted["fencingToken"].as_i64().unwrap().to_string();
    for holder in ["team-z", CLIENT_ID] {
        let out = berth(
            &url,
            &pki,
            &token_file,
            &["lease", "acquire", "prod/other", "--holder", holder],
        );
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "error: forbidden (403): holder not authorized for this identity\n"
        );
    }

    // 3. The broker refreshes before expiry; the CLI picks the new file up.
    wait_until("a refreshed token", Duration::from_secs(10), || {
        std::fs::read_to_string(&token_file).is_ok_and(|t| t != first)
    });
    let renewed = berth_json(
        &url,
        &pki,
        &token_file,
        &[
            "lease",
            "renew",
            "prod/job",
            "--holder",
            "team-a/worker-1",
            "--token",
            &fencing,
            "-o",
            "json",
        ],
    );
    assert_eq!(renewed["acquired"], true);

    // 4. The provider rotates its signing key: the server accepts tokens under the new key
    //    without a restart (an unknown kid refetches the JWKS).
    let old_kid = jwt_part(&first, 0)["kid"].as_str().unwrap().to_owned();
    let (status, body) = http(provider.port, "POST", "/test/rotate-keys").unwrap();
    assert_eq!(status, 200, "{body}");
    let new_kid = serde_json::from_str::<Value>(&body).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);
    wait_until(
        "a token signed with the new key",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&token_file).is_ok_and(|t| {
                t.split('.').count() == 3 && jwt_part(&t, 0)["kid"] == new_kid.as_str()
            })
        },
    );
    let rotated_at = Instant::now();
    // The server refetches its JWKS for an unknown kid at most every 10 s, so right after its
    // start-up fetch the new key may be refused for up to that long; then it is accepted.
    wait_until(
        "the server to accept the new key",
        Duration::from_secs(15),
        || {
            berth(
                &url,
                &pki,
                &token_file,
                &[
                    "lease",
                    "renew",
                    "prod/job",
                    "--holder",
                    "team-a/worker-1",
                    "--token",
                    &fencing,
                ],
            )
            .status
            .success()
        },
    );
    eprintln!(
        "a token under the new key was accepted {:?} after it appeared in the token file",
        rotated_at.elapsed()
    );
    assert!(
        server.log().contains("oidc keys refreshed"),
        "the server refetched its keys{}",
        diag(&broker, &server)
    );

    // 5. The provider goes away: the broker keeps the last good token and backs off.
    let port = provider.port;
    provider.proc.terminate();
    let kept = std::fs::read_to_string(&token_file).unwrap();
    wait_until("three failed refreshes", Duration::from_secs(15), || {
        http(admin, "GET", "/metrics")
            .is_some_and(|(_, m)| metric(&m, "berth_oidc_broker_consecutive_failures") >= 3.0)
    });
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        kept,
        "the last good token stays"
    );
    // The server verifies it from its cached keys while the provider is down.
    let still = berth(&url, &pki, &token_file, &["lease", "get", "prod/job"]);
    assert!(
        still.status.success(),
        "{}",
        String::from_utf8_lossy(&still.stderr)
    );
    let log = broker.log();
    assert!(log.contains("keeping the last good token file"), "{log}");
    // Backoff: 1 s, 2 s, 4 s, then capped at 4 s (--max-retry-interval).
    assert!(log.contains("retry_in_secs=1.0"), "{log}");
    assert!(log.contains("retry_in_secs=2.0"), "{log}");
    assert!(log.contains("retry_in_secs=4.0"), "{log}");
    assert!(!log.contains("retry_in_secs=8"), "{log}");

    // Once the kept token expires the broker is no longer ready.
    wait_until(
        "/readyz 503 after expiry",
        Duration::from_secs(TOKEN_TTL_SECS + 5),
        || http(admin, "GET", "/readyz").is_some_and(|(s, _)| s == 503),
    );

    // 6. The provider returns (same port, same keys): the broker recovers on its own.
    provider = Provider::start(&dir, w, port);
    wait_until("a token after recovery", Duration::from_secs(15), || {
        std::fs::read_to_string(&token_file).is_ok_and(|t| t != kept)
    });
    wait_until("/readyz 200 again", Duration::from_secs(5), || {
        http(admin, "GET", "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let (_, m) = http(admin, "GET", "/metrics").unwrap();
    assert_eq!(metric(&m, "berth_oidc_broker_consecutive_failures"), 0.0);
    assert!(
        metric(
            &m,
            "berth_oidc_broker_token_refreshes_total{result=\"failure\"}"
        ) >= 3.0
    );
    let released = berth(
        &url,
        &pki,
        &token_file,
        &[
            "lease",
            "release",
            "prod/job",
            "--holder",
            "team-a/worker-1",
            "--token",
            &fencing,
        ],
    );
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );

    // 7. SIGTERM ends the broker with exit code 0.
    let status = broker.terminate();
    assert_eq!(status.code(), Some(0), "{}", broker.log());
    drop(provider);
}

#[test]
fn wrong_client_secret_keeps_the_broker_unready_and_nothing_is_written() {
    let Some(dir) =
        provider_dir_or_skip("wrong_client_secret_keeps_the_broker_unready_and_nothing_is_written")
    else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let provider = Provider::start(&dir, w, 0);
    let output = w.join("token");
    let admin = free_port();
    let log = w.join("broker.log");
    let mut broker = Proc {
        child: Command::new(BROKER)
            .env_clear()
            .args(["--oidc-issuer-url", &provider.issuer])
            .args(["--oidc-client-id", CLIENT_ID])
            .args(["--oidc-client-secret", "wrong"])
            .args(["--oidc-audience", AUDIENCE])
            .args(["--output", output.to_str().unwrap()])
            .args(["--min-refresh-interval", "1s", "--max-retry-interval", "2s"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--log-format", "text"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    wait_until("two failures", Duration::from_secs(10), || {
        http(admin, "GET", "/metrics")
            .is_some_and(|(_, m)| metric(&m, "berth_oidc_broker_consecutive_failures") >= 2.0)
    });
    assert_eq!(http(admin, "GET", "/readyz").unwrap().0, 503);
    assert!(!output.exists());
    let log = broker.log();
    assert!(log.contains("invalid_client"), "{log}");
    assert!(log.contains("--oidc-client-secret is visible"), "{log}");
    assert!(!log.contains("wrong"), "the secret is never logged: {log}");
    assert_eq!(broker.terminate().code(), Some(0));
}

#[test]
fn invalid_configuration_exits_2_and_unresolvable_endpoint_exits_1() {
    let run = |args: &[&str]| {
        Command::new(BROKER)
            .env_clear()
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--oidc-client-id", "c", "--oidc-client-secret", "s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--oidc-issuer-url must be set unless --oidc-token-url is")
    );
    let out = run(&[
        "--oidc-token-url",
        "http://127.0.0.1:1/token",
        "--oidc-client-id",
        "c",
        "--oidc-client-secret",
        "s",
        "--output",
        "/tmp/x",
        "--max-retry-interval",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // Discovery of an issuer nobody serves: the token endpoint cannot be resolved.
    let port = free_port();
    let out = run(&[
        "--oidc-issuer-url",
        &format!("http://127.0.0.1:{port}"),
        "--oidc-client-id",
        "c",
        "--oidc-client-secret",
        "s",
        "--output",
        "/tmp/x",
        "--fetch-timeout",
        "2s",
        "--admin-addr",
        "",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot resolve the token endpoint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn apiserver_fails_fast_and_clearly_when_discovery_fails() {
    let work = tempfile::tempdir().unwrap();
    let pki = make_pki(work.path());
    // An issuer that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let out = Command::new(sibling_bin("berth-apiserver"))
        .env_clear()
        .args(["--store-backend", "mem", "--auth-mode", "oidc"])
        .args(["--oidc-issuer-url", &issuer, "--oidc-audience", AUDIENCE])
        .args(["--oidc-discovery-timeout", "1s"])
        .args(["--tls-cert-file", pki.cert.to_str().unwrap()])
        .args(["--tls-key-file", pki.key.to_str().unwrap()])
        .args(["--listen-addr", "127.0.0.1:0", "--metrics-addr", ""])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // The request's own timeout and the overall bound are both 1 s; either may fire first.
    assert!(
        err.contains(&format!(
            "OIDC discovery failed: GET {issuer}/.well-known/openid-configuration: no answer within 1s"
        )) || err.contains(&format!(
            "OIDC discovery of {issuer} did not finish within --oidc-discovery-timeout 1s"
        )),
        "{err}"
    );
    // Missing required flags name themselves.
    let out = Command::new(sibling_bin("berth-apiserver"))
        .env_clear()
        .args(["--auth-mode", "oidc", "--oidc-audience", AUDIENCE])
        .args(["--tls-cert-file", pki.cert.to_str().unwrap()])
        .args(["--tls-key-file", pki.key.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--oidc-issuer-url must be set with --auth-mode oidc")
    );
    // --oidc-* flags without --auth-mode oidc are a mistake, not silently ignored.
    let out = Command::new(sibling_bin("berth-apiserver"))
        .env_clear()
        .args(["--auth-mode", "static-keys", "--oidc-audience", AUDIENCE])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--oidc-* flags require --auth-mode oidc")
    );
}
