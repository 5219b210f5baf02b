//! The command a `berth run` chaos client runs under the lease: it writes to the fenced
//! resource of [`berth_chaos::berth_run`] over a Unix socket until its work is done.
//!
//! With `BERTH_CHAOS_CLOCK_PROBE=1` it only prints its wall clock (Unix seconds), sleeps 500 ms
//! and prints its wall clock and the `Instant` time the sleep took: the clock check of
//! [`berth_chaos::faketime::probe`].
//!
//! Environment: `BERTH_CHAOS_FENCE` (socket path), `BERTH_CHAOS_WORK_MS` (how long to work),
//! and from `berth run`: `BERTH_LEASE_HOLDER`, `BERTH_FENCING_TOKEN`. It sends
//! `start <holder> <token> <berth-run pid>`, then `write <seq>` every 20 ms, then `stop`, each
//! answered with one line, and exits 0. It does not react to a refused (stale) write: how long
//! a stale child keeps going is what `berth run` has to bound. Killed, it just dies; the server
//! sees the connection close.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

const BEAT: Duration = Duration::from_millis(20);

fn var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

#[allow(clippy::disallowed_methods, clippy::print_stdout)] // printing its clocks is its job
fn probe() {
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    println!("{:.6}", wall());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    println!("{:.6} {:.6}", wall(), t0.elapsed().as_secs_f64());
}

fn main() -> Result<()> {
    if std::env::var_os("BERTH_CHAOS_CLOCK_PROBE").is_some() {
        probe();
        return Ok(());
    }
    let socket = var("BERTH_CHAOS_FENCE")?;
    let holder = var("BERTH_LEASE_HOLDER")?;
    let token: i64 = var("BERTH_FENCING_TOKEN")?
        .parse()
        .context("BERTH_FENCING_TOKEN")?;
    let work = Duration::from_millis(var("BERTH_CHAOS_WORK_MS")?.parse()?);
    let stream = UnixStream::connect(&socket).with_context(|| format!("connect {socket}"))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    let mut say = |msg: String| -> Result<()> {
        writer.write_all(msg.as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        Ok(())
    };
    let t0 = Instant::now();
    say(format!(
        "start {holder} {token} {}\n",
        std::os::unix::process::parent_id()
    ))?;
    let mut seq = 0u64;
    while t0.elapsed() < work {
        std::thread::sleep(BEAT);
        seq += 1;
        say(format!("write {seq}\n"))?;
    }
    say("stop\n".to_owned())?;
    Ok(())
}
