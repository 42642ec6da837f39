//! The `pushfleet-publish` command: publish to pushfleet from a shell.
//!
//! ```text
//! pushfleet-publish one ticker_INR tick '{"price":83.12}'
//! pushfleet-publish file messages.jsonl        # one {"channel","event","data"} per line; - for stdin
//! pushfleet-publish ticker --channels ticker_INR,ticker_USD --rate 10
//! pushfleet-publish shard ticker_INR ticker_USD  # which relay owns each channel
//! ```
//!
//! Relays come from `--relay` (repeatable) or etcd (`--etcd`); each publish goes to
//! the relay that owns its channel.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use pushfleet_fleet::cli::{self, EXIT_CONFIG, EXIT_UNAVAILABLE};
use pushfleet_fleet::flags::{is_etcd_endpoint, is_tcp_endpoint, parse_duration};

use super::{EtcdRelays, Publisher, PublisherError};
use serde::Deserialize;
use serde_json::value::RawValue;

const PROGRAM: &str = "pushfleet-publish";
/// sysexits.h EX_DATAERR: some input could not be published.
const EXIT_DATA: u8 = 65;

/// Publish messages to pushfleet relays.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version, about)]
struct Args {
    /// Relay publish endpoint (`tcp://host:port`), repeatable or comma-separated.
    /// Default: tcp://127.0.0.1:5560 when no --etcd is given.
    #[arg(
        long = "relay",
        env = "PUSHFLEET_RELAYS",
        value_delimiter = ',',
        global = true
    )]
    relays: Vec<String>,

    /// etcd endpoints (`http://host:port`) to find the relays in.
    #[arg(long, env = "PUSHFLEET_ETCD", value_delimiter = ',', global = true)]
    etcd: Vec<String>,

    /// etcd key prefix.
    #[arg(long, env = "PUSHFLEET_ETCD_PREFIX", default_value = pushfleet_protocol::registry::DEFAULT_PREFIX, global = true)]
    etcd_prefix: String,

    /// How long to wait for every relay to accept a connection.
    #[arg(long, default_value = "3s", value_parser = parse_duration, global = true)]
    connect_timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish one message.
    One {
        channel: String,
        event: String,
        /// JSON text, passed to clients unchanged.
        data: String,
    },
    /// Publish every line of a file (`-` for stdin): `{"channel":..,"event":..,"data":..}`.
    File {
        path: String,
        /// Publishes per second (0: as fast as the relays take them).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// A steady ticker of made-up prices: the demo publisher and a load generator.
    Ticker {
        /// Channels to tick on, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ticker_INR,ticker_USD,ticker_EUR,ticker_JPY"
        )]
        channels: Vec<String>,
        /// Publishes per second over all channels.
        #[arg(long, default_value_t = 4.0)]
        rate: f64,
        /// Stop after this long (default: run until interrupted).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Stop after this many publishes.
        #[arg(long)]
        count: Option<u64>,
        /// Pad each message's data to about this many bytes.
        #[arg(long, default_value_t = 0)]
        size: usize,
        /// Print one line per second with the rate achieved.
        #[arg(long)]
        progress: bool,
    },
    /// Print the relay that owns each channel.
    Shard { channels: Vec<String> },
}

#[derive(Deserialize)]
struct Line<'a> {
    channel: String,
    event: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Runs the command line; the binary's `main` is this.
pub fn main() -> ExitCode {
    let args: Args = match cli::parse(PROGRAM) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(bad) = args.relays.iter().find(|r| !is_tcp_endpoint(r)) {
        return cli::invalid(
            PROGRAM,
            format!("--relay {bad:?} is not a tcp://host:port endpoint"),
        );
    }
    if let Some(bad) = args.etcd.iter().find(|e| !is_etcd_endpoint(e)) {
        return cli::invalid(
            PROGRAM,
            format!("--etcd endpoint {bad:?} must look like http://host:port"),
        );
    }
    if !args.relays.is_empty() && !args.etcd.is_empty() {
        return cli::invalid(PROGRAM, "--relay and --etcd exclude each other");
    }
    cli::init_tracing();
    let publisher = if args.etcd.is_empty() {
        let relays = if args.relays.is_empty() {
            vec!["tcp://127.0.0.1:5560".to_owned()]
        } else {
            args.relays.clone()
        };
        Publisher::new(relays)
    } else {
        match EtcdRelays::follow(args.etcd.clone(), &args.etcd_prefix, args.connect_timeout) {
            Ok(r) => Publisher::following(r),
            Err(e) => {
                return fail(
                    EXIT_UNAVAILABLE,
                    format!("cannot start the etcd follower: {e}"),
                )
            }
        }
    };
    let mut publisher = match publisher {
        Ok(p) => p,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    if let Command::Shard { channels } = &args.command {
        for channel in channels {
            match publisher.owner(channel) {
                Some(owner) => println!("{channel} {owner}"),
                None => return fail(EXIT_UNAVAILABLE, PublisherError::NoRelays),
            }
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = publisher.wait_connected(args.connect_timeout) {
        return fail(EXIT_UNAVAILABLE, e);
    }
    // Waiting for room is right for a CLI: it should deliver, not drop.
    publisher.set_send_timeout(Duration::from_secs(5));
    match args.command {
        Command::One {
            channel,
            event,
            data,
        } => match publisher.publish(&channel, &event, &data) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ PublisherError::Invalid(_)) => fail(EXIT_CONFIG, e),
            Err(e) => fail(EXIT_UNAVAILABLE, e),
        },
        Command::File { path, rate } => publish_file(&mut publisher, &path, rate),
        Command::Ticker {
            channels,
            rate,
            duration,
            count,
            size,
            progress,
        } => ticker(
            &mut publisher,
            &channels,
            rate,
            duration,
            count,
            size,
            progress,
        ),
        Command::Shard { .. } => ExitCode::SUCCESS,
    }
}

fn fail(code: u8, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("{PROGRAM}: {error}");
    ExitCode::from(code)
}

/// Sleeps until publish number `n` is due at `rate` per second.
fn pace(start: Instant, n: u64, rate: f64) {
    if rate > 0.0 {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

fn publish_file(publisher: &mut Publisher, path: &str, rate: f64) -> ExitCode {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(path) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => return fail(EXIT_CONFIG, format!("cannot open {path}: {e}")),
        }
    };
    let start = Instant::now();
    let (mut sent, mut bad) = (0u64, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => return fail(EXIT_DATA, format!("{path}:{number}: cannot read: {e}")),
        };
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<Line<'_>>(&line)
            .map_err(|e| e.to_string())
            .and_then(|l| {
                pace(start, sent, rate);
                publisher
                    .publish(&l.channel, &l.event, l.data.get())
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => sent += 1,
            Err(e) => {
                bad += 1;
                eprintln!("{PROGRAM}: {path}:{number}: {e}");
            }
        }
    }
    eprintln!("{PROGRAM}: published {sent}, refused {bad}");
    if bad > 0 {
        ExitCode::from(EXIT_DATA)
    } else {
        ExitCode::SUCCESS
    }
}

/// A made-up price that random-walks, per channel.
struct Quote {
    channel: String,
    symbol: String,
    price: f64,
    n: u64,
}

fn ticker(
    publisher: &mut Publisher,
    channels: &[String],
    rate: f64,
    duration: Option<Duration>,
    count: Option<u64>,
    size: usize,
    progress: bool,
) -> ExitCode {
    if channels.is_empty() || rate <= 0.0 {
        return fail(
            EXIT_CONFIG,
            "ticker needs at least one channel and a rate above 0",
        );
    }
    let mut quotes: Vec<Quote> = channels
        .iter()
        .map(|c| Quote {
            channel: c.clone(),
            symbol: c.rsplit('_').next().unwrap_or(c).to_owned(),
            price: 50.0 + fastrand::f64() * 100.0,
            n: 0,
        })
        .collect();
    let padding: String = "x".repeat(size.saturating_sub(90));
    let start = Instant::now();
    let (mut sent, mut busy) = (0u64, 0u64);
    let mut last_report = (Instant::now(), 0u64);
    let mut data = String::with_capacity(128 + padding.len());
    let mut i = 0u64;
    loop {
        if count.is_some_and(|c| i >= c) || duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        pace(start, i, rate);
        let q = &mut quotes[(i % channels.len() as u64) as usize];
        let change = (fastrand::f64() - 0.5) * q.price * 0.002;
        q.price = (q.price + change).max(0.01);
        q.n += 1;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        data.clear();
        use std::fmt::Write as _;
        let _ = write!(
            data,
            r#"{{"symbol":"{}","price":{:.4},"change":{:.4},"n":{},"t":{}"#,
            q.symbol, q.price, change, q.n, now_ms
        );
        if !padding.is_empty() {
            let _ = write!(data, r#","pad":"{padding}""#);
        }
        data.push('}');
        match publisher.publish(&q.channel, "tick", &data) {
            Ok(()) => sent += 1,
            Err(PublisherError::Busy(_)) => busy += 1,
            Err(e) => return fail(EXIT_UNAVAILABLE, e),
        }
        i += 1;
        if progress && last_report.0.elapsed() >= Duration::from_secs(1) {
            let rate_now = (sent - last_report.1) as f64 / last_report.0.elapsed().as_secs_f64();
            eprintln!("{PROGRAM}: {rate_now:.0} msg/s, {sent} sent, {busy} refused (queue full)");
            last_report = (Instant::now(), sent);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{PROGRAM}: published {sent} in {secs:.1} s ({:.0} msg/s), {busy} refused (queue full)",
        sent as f64 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}
