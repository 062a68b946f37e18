//! The `onewindow` command line: parse, load config, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use onewindow::app::{self, Running};
use onewindow::loader::{self, Overrides};

/// mimalloc instead of glibc malloc (the default `mimalloc` feature): the
/// request path allocates and frees small objects across threads (request
/// tasks, the audit writer, the index thread), where glibc took about a tenth
/// of the CPU. docs/PERFORMANCE.md has the measurements, RSS included.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "onewindow",
    version,
    about = "Data-sharing integration gateway for government services"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// gateway.toml; other files are found through its [paths].
    #[arg(long, global = true, default_value = "config/gateway.toml")]
    config: PathBuf,
    /// Plain-HTTP data-plane listener (benchmarks, behind a TLS-terminating balancer).
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Admin listener.
    #[arg(long, global = true)]
    admin_listen: Option<std::net::SocketAddr>,
    /// State directory (audit log). `audit verify` and `audit query` take
    /// several (one per cluster node: --data-dir A --data-dir B).
    #[arg(long, global = true)]
    data_dir: Vec<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    /// TLS data-plane listener; "" disables TLS.
    #[arg(long, global = true, value_parser = parse_optional_addr)]
    tls_listen: Option<OptionalAddr>,
    /// Cluster mode: the Redis (or Valkey) URL shared by every node
    /// (overrides [cluster] redis_url; "" turns cluster mode off).
    #[arg(long, global = true)]
    redis: Option<String>,
    /// Do not start the simulated departments (another node runs them).
    #[arg(long, global = true)]
    no_demo: bool,
    /// This node's name in cluster mode (overrides [cluster] node).
    #[arg(long, global = true)]
    node: Option<String>,
    /// Directory outside the data dir where every signed audit head is also
    /// appended (overrides `[audit] witness_dir`); must exist and be writable.
    #[arg(long, global = true)]
    audit_witness: Option<PathBuf>,
}

/// An address, or none (`""`).
#[derive(Clone, Copy, Debug)]
struct OptionalAddr(Option<std::net::SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s.trim().is_empty() {
        return Ok(OptionalAddr(None));
    }
    s.parse().map(|a| OptionalAddr(Some(a))).map_err(|e| {
        format!("`{s}` is not an address such as 127.0.0.1:8443 ({e}); use \"\" to disable TLS")
    })
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate gateway.toml, clients, datasets, scenarios and adapters.
    Check,
    /// Mint a token from the demo issuer; prints the token alone on stdout.
    Token {
        /// Subject (the client id, e.g. portal-binhai).
        #[arg(long)]
        sub: String,
        /// Role claim, repeatable (platform-admin, department-admin, auditor).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Department claim (for department-admin).
        #[arg(long)]
        department: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Audit log tools for security teams.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Signed records: verify a saved reply, rotate the signing key.
    Record {
        #[command(subcommand)]
        command: RecordCommand,
    },
}

#[derive(Subcommand)]
enum RecordCommand {
    /// Check a saved dataset or scenario reply's signatures offline.
    /// Exit 0 "valid"; 1 and what failed otherwise.
    Verify {
        /// The saved reply (JSON); `-` reads standard input.
        #[arg(default_value = "-")]
        file: String,
        /// JWK Set with the gateway's public keys (default: the certs dir's
        /// record-signing.jwks.json; or save GET /.well-known/jwks.json).
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Make a new record-signing key current; the old public key stays in
    /// the JWKS so earlier records keep verifying. Restart to sign with it.
    RotateKey,
}

// Parsed once per run: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum AuditCommand {
    /// Verify hashes, links, sequence numbers and checkpoint signatures.
    /// Exit 0 when intact; 1 and the first bad record otherwise.
    Verify {
        /// Files to verify (default: every file of <data-dir>/audit).
        files: Vec<PathBuf>,
        /// A witness directory: the log must reach, and agree with, every
        /// signed head it holds.
        #[arg(long)]
        witness: Option<PathBuf>,
        /// SHA-256 (hex) of the trusted checkpoint public key (default:
        /// `[audit] signing_key_fingerprint`); another key is refused.
        #[arg(long)]
        key_fingerprint: Option<String>,
    },
    /// Print matching records as JSON Lines.
    Query {
        /// Client id.
        #[arg(long)]
        client: Option<String>,
        /// Plain subject id (the gateway computes its reference).
        #[arg(long)]
        subject: Option<String>,
        /// Dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Scenario.
        #[arg(long)]
        scenario: Option<String>,
        /// Department.
        #[arg(long)]
        department: Option<String>,
        /// Service case id.
        #[arg(long)]
        case: Option<String>,
        /// allow, deny or error.
        #[arg(long)]
        decision: Option<String>,
        /// Action, e.g. dataset.read.
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time, inclusive.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time, exclusive.
        #[arg(long)]
        until: Option<String>,
        /// Most records to print.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Rebuild the data-subject index (<data-dir>/subject-index.sqlite) from the log.
    Reindex,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// (Re)generate the development CA and server certificate.
    Dev,
}

/// The operator log on stderr, written in batches by a thread of its own
/// (`onewindow::logging`); colours only on a terminal. Keep the guard until
/// exit: dropping it writes what is left.
fn init_logging(json: bool) -> Option<onewindow::logging::LogGuard> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = match onewindow::logging::BatchedWriter::start(std::io::stderr()) {
        Ok((w, g)) => (Some(w), Some(g)),
        Err(e) => {
            eprintln!("onewindow: log writer thread not started ({e}); logging directly");
            (None, None)
        }
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal());
    match (writer, json) {
        (Some(w), true) => b.with_writer(w).json().init(),
        (Some(w), false) => b.with_writer(w).init(),
        (None, true) => b.with_writer(std::io::stderr).json().init(),
        (None, false) => b.with_writer(std::io::stderr).init(),
    }
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onewindow: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let _log = init_logging(cli.serve.log_json);
                serve(cli.serve).await
            }
            Command::Check => check(&cli.serve),
            Command::Token {
                sub,
                roles,
                department,
                ttl,
            } => token(&cli.serve, &sub, &roles, department.as_deref(), ttl),
            Command::Audit { command } => audit(&cli.serve, command).await,
            Command::Certs {
                command: CertsCommand::Dev,
            } => certs_dev(&cli.serve),
            Command::Record { command } => record(&cli.serve, command),
        }
    })
}

fn overrides(a: &ServeArgs) -> Overrides {
    Overrides {
        listen: a.listen,
        admin_listen: a.admin_listen,
        tls_listen: a.tls_listen.map(|o| o.0),
        data_dir: a.data_dir.first().cloned(),
        redis: a.redis.clone(),
        no_demo: a.no_demo,
        node: a.node.clone(),
        clock: None,
        case_store: None,
        audit_witness: a.audit_witness.clone(),
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    if args.data_dir.len() > 1 {
        eprintln!(
            "onewindow: --data-dir given {} times; a node has one data dir (only `audit verify` and `audit query` take several)",
            args.data_dir.len()
        );
        return ExitCode::from(2);
    }
    let running = match Running::start(&args.config, overrides(&args)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("onewindow: cannot start:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(a) = running.tls_addr {
        tracing::info!("data plane (TLS) listening on https://{a}");
    }
    if let Some(a) = running.plain_addr {
        tracing::info!("data plane (plain) listening on http://{a}");
    }
    if let Some(a) = running.admin_addr {
        tracing::info!("admin plane listening on http://{a}");
    }
    for (d, a) in &running.demo_addrs {
        tracing::info!("simulated department {d} on http://{a}");
    }
    if !running.demo_addrs.is_empty() {
        print_demo_hint(&args, &running);
    }
    wait_for_signals(&running).await;
    tracing::info!("shutting down: draining in-flight requests");
    running.stop().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn print_demo_hint(args: &ServeArgs, running: &Running) {
    let certs_dir = running.data.state.load().settings.server.certs_dir.clone();
    let Ok((issuer, _)) = onewindow::auth::DemoIssuer::load_or_generate(&certs_dir) else {
        return;
    };
    let Ok(token) = issuer.mint("portal-binhai", &[], None, Duration::from_secs(3600)) else {
        return;
    };
    let (base, ca) = match (running.tls_addr, running.plain_addr) {
        (Some(a), _) => (
            format!("https://localhost:{}", a.port()),
            format!(
                " --cacert {}",
                onewindow::certs::dev_ca_path(&certs_dir).display()
            ),
        ),
        (None, Some(a)) => (format!("http://{a}"), String::new()),
        _ => return,
    };
    let _ = args;
    eprintln!(
        "\nTry it (token for portal-binhai, valid 1 h):\n\n  curl{ca} -H 'Authorization: Bearer {token}' -H 'X-Purpose: service-handling' {base}/v1/datasets/business-licence/91120116MA07Q8XJ2K\n"
    );
}

#[cfg(unix)]
async fn wait_for_signals(running: &Running) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => match running.admin.reload().await {
                Ok(()) => tracing::info!("SIGHUP: configuration reloaded"),
                Err(e) => tracing::error!("SIGHUP: configuration refused, keeping the running one:\n{e}"),
            },
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_running: &Running) {
    let _ = tokio::signal::ctrl_c().await;
}

fn check(args: &ServeArgs) -> ExitCode {
    if let Err(e) = app::prepare_dev_material(&args.config) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    match loader::load(&args.config, &overrides(args)) {
        Ok(l) => {
            println!(
                "{}: ok ({} departments, {} datasets, {} scenarios, {} adapters)",
                args.config.display(),
                l.settings.departments.len(),
                l.datasets.len(),
                l.scenarios.iter().count(),
                l.adapters.len()
            );
            for w in onewindow::auth::approval::lapse_warnings(
                &l.grants,
                onewindow::clock::Date::today(),
            ) {
                println!("{w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn record(args: &ServeArgs, command: RecordCommand) -> ExitCode {
    use onewindow::sharing::{RECORD_JWKS_FILE, RecordKeys, keys::read_jwks, verify_document};
    let certs_dir = loader::dirs(&args.config, args.data_dir.first().map(PathBuf::as_path)).1;
    match command {
        RecordCommand::Verify { file, jwks } => {
            let jwks_path = jwks.unwrap_or_else(|| certs_dir.join(RECORD_JWKS_FILE));
            let keys = match read_jwks(&jwks_path) {
                Ok(k) => k,
                Err(e) => {
                    println!("invalid: cannot read the JWKS: {e}");
                    return ExitCode::from(1);
                }
            };
            let text = if file == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
            } else {
                std::fs::read(&file)
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    println!("invalid: cannot read {file}: {e}");
                    return ExitCode::from(1);
                }
            };
            let doc: serde_json::Value = match serde_json::from_slice(&text) {
                Ok(d) => d,
                Err(e) => {
                    println!("invalid: not JSON: {e}");
                    return ExitCode::from(1);
                }
            };
            match verify_document(&doc, &keys) {
                Ok(what) => {
                    println!("valid: {}", what.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("invalid: {e}");
                    ExitCode::from(1)
                }
            }
        }
        RecordCommand::RotateKey => match RecordKeys::rotate(&certs_dir) {
            Ok((old, new)) => {
                println!(
                    "record-signing key rotated: {new} is current; {old} stays in {} for verification. Restart the gateway to sign with the new key.",
                    certs_dir.join(RECORD_JWKS_FILE).display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("onewindow record rotate-key: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn token(
    args: &ServeArgs,
    sub: &str,
    roles: &[String],
    department: Option<&str>,
    ttl: u64,
) -> ExitCode {
    let certs_dir = loader::dirs(&args.config, args.data_dir.first().map(PathBuf::as_path)).1;
    let issuer = match onewindow::auth::DemoIssuer::load_or_generate(&certs_dir) {
        Ok((i, _)) => i,
        Err(e) => {
            eprintln!("onewindow token: {e}");
            return ExitCode::FAILURE;
        }
    };
    match issuer.mint(sub, roles, department, Duration::from_secs(ttl)) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("onewindow token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn certs_dev(args: &ServeArgs) -> ExitCode {
    let (_, certs_dir) = loader::dirs(&args.config, None);
    let cert = certs_dir.join("dev-server.crt");
    let key = certs_dir.join("dev-server.key");
    match onewindow::certs::ensure_dev_server_cert(&certs_dir, &cert, &key, true) {
        Ok(_) => {
            println!(
                "wrote {} and {} (CA {})",
                cert.display(),
                key.display(),
                onewindow::certs::dev_ca_path(&certs_dir).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("onewindow certs dev: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn audit(args: &ServeArgs, command: AuditCommand) -> ExitCode {
    use onewindow::audit;
    let (default_data, certs_dir) = loader::dirs(&args.config, None);
    // One audit directory per data dir (each cluster node keeps its own chain).
    let audit_dirs: Vec<PathBuf> = if args.data_dir.is_empty() {
        vec![loader::audit_dir(&args.config, &default_data)]
    } else {
        args.data_dir
            .iter()
            .map(|d| loader::audit_dir(&args.config, d))
            .collect()
    };
    match command {
        AuditCommand::Reindex => {
            // Each data dir's index covers its own node's log.
            let data_dirs = if args.data_dir.is_empty() {
                vec![default_data.clone()]
            } else {
                args.data_dir.clone()
            };
            let mut code = ExitCode::SUCCESS;
            for (data_dir, audit_dir) in data_dirs.iter().zip(&audit_dirs) {
                match onewindow::transparency::reindex(data_dir, audit_dir).await {
                    Ok(pos) => println!(
                        "subject index rebuilt: {} covers the log up to seq {}",
                        data_dir.join(onewindow::transparency::INDEX_FILE).display(),
                        pos.last_seq
                    ),
                    Err(e) => {
                        eprintln!("onewindow audit reindex ({}): {e}", data_dir.display());
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        AuditCommand::Verify {
            files,
            witness,
            key_fingerprint,
        } => {
            let pub_path = certs_dir.join(audit::SIGNING_PUB_FILE);
            let key = match audit::load_public_key(&pub_path) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("onewindow audit verify: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let settings = loader::audit_settings(&args.config);
            let pinned = key_fingerprint.or(settings.signing_key_fingerprint);
            println!("key fingerprint: {}", audit::key_fingerprint(&key));
            match &pinned {
                Some(p) => {
                    if let Err(e) = audit::check_fingerprint(&key, p, &pub_path) {
                        println!(
                            "BROKEN: {} line 0: key mismatch: {e}; nothing signed with it is trusted",
                            pub_path.display()
                        );
                        return ExitCode::from(1);
                    }
                }
                None => println!(
                    "note: no pinned key fingerprint (`--key-fingerprint` or `[audit] signing_key_fingerprint`); \
                     whoever can replace {} can re-sign history",
                    pub_path.display()
                ),
            }
            let witness_dir = witness.or(settings.witness_dir);
            let heads = match &witness_dir {
                None => Vec::new(),
                Some(d) => match audit::read_witness(d) {
                    Ok(h) => h
                        .into_iter()
                        .map(|(line, record)| audit::WitnessHead {
                            file: d.join(audit::WITNESS_FILE),
                            line,
                            record,
                        })
                        .collect(),
                    Err(e) => {
                        println!("BROKEN: witness: {e}");
                        return ExitCode::from(1);
                    }
                },
            };
            if let Some(d) = &witness_dir {
                println!("witness: {} signed heads in {}", heads.len(), d.display());
            }
            let opts = audit::VerifyOptions {
                progress: true,
                allow_partial_tail: false,
            };
            // Each directory whole: every file in order, plus the signed head
            // that proves the log was not cut before its last checkpoint.
            let runs: Vec<(Option<PathBuf>, Vec<PathBuf>)> = if files.is_empty() {
                let many = audit_dirs.len() > 1;
                audit_dirs
                    .iter()
                    .map(|d| (many.then(|| d.clone()), vec![d.clone()]))
                    .collect()
            } else {
                vec![(None, files)]
            };
            let mut code = ExitCode::SUCCESS;
            for (label, files) in runs {
                let prefix = label.map_or(String::new(), |d| format!("{}: ", d.display()));
                // Several nodes may share one witness: each chain answers for
                // its own node's heads only.
                let node = audit::chain_node(&files);
                let own: Vec<audit::WitnessHead> = heads
                    .iter()
                    .filter(|h| h.record.event.node == node)
                    .cloned()
                    .collect();
                match audit::verify_witnessed(&files, &key, &opts, &own) {
                    Ok(report) => println!(
                        "{prefix}intact: {} records in {} files, seq {}..={}, {} signed checkpoints (last at {}), head {}",
                        report.records,
                        report.files,
                        report.first_seq,
                        report.last_seq,
                        report.checkpoints,
                        report
                            .last_checkpoint_seq
                            .map_or("-".to_string(), |s| s.to_string()),
                        report.last_hash
                    ),
                    Err(f) => {
                        println!("{prefix}BROKEN: {f}");
                        if !f.also.is_empty() {
                            println!("{prefix}({} findings)", f.also.len() + 1);
                        }
                        code = ExitCode::from(1);
                    }
                }
            }
            code
        }
        AuditCommand::Query {
            client,
            subject,
            dataset,
            scenario,
            department,
            case,
            decision,
            action,
            since,
            until,
            limit,
        } => {
            let key = match audit::SubjectKey::load(&certs_dir) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("onewindow audit query: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let filter = audit::Filter {
                client,
                subject,
                dataset,
                scenario,
                department,
                case_id: case,
                decision,
                action,
                since,
                until,
            };
            let mut iters = Vec::new();
            for dir in &audit_dirs {
                let compiled = match filter.clone().compile(&key) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("onewindow audit query: {e}");
                        return ExitCode::from(2);
                    }
                };
                match audit::QueryIter::new(dir, compiled, None) {
                    Ok(i) => iters.push(i),
                    Err(e) => {
                        eprintln!("onewindow audit query: {}: {e}", dir.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            // Several nodes' logs: one stream, by time.
            for (n, rec) in audit::MergeByTime::new(iters).enumerate() {
                if limit.is_some_and(|l| n >= l) {
                    break;
                }
                match rec {
                    Ok(r) => {
                        if serde_json::to_writer(&mut out, &r).is_err() || writeln!(out).is_err() {
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("onewindow audit query: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            let _ = out.flush();
            ExitCode::SUCCESS
        }
    }
}
