//! `autopilot`: the Azure Functions custom handler (`serve`) and the operator's CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use private_link_autopilot::app::{self, App};
use private_link_autopilot::arm::Secret;
use private_link_autopilot::arm::TokenSource;
use private_link_autopilot::arm::credential::{AzureTokenSource, StaticToken};
use private_link_autopilot::config::Config;
use private_link_autopilot::intake::server;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::queue::servicebus::{ServiceBusAuth, ServiceBusCredentials, ServiceBusQueue};
use private_link_autopilot::queue::{SqliteQueue, WorkQueue};
use private_link_autopilot::reconcile::Mode;
use private_link_autopilot::runtime::fan_out::format_report;
use private_link_autopilot::runtime::sweep;
use private_link_autopilot::runtime::worker;
use private_link_autopilot::telemetry;
use private_link_autopilot::{ops, packaging};

#[derive(Parser)]
#[command(name = "autopilot", version, about = "Private endpoint DNS, vendor allowlists and approvals on autopilot")]
struct Cli {
    /// Configuration file (TOML); environment overrides AUTOPILOT__SECTION__KEY apply on top.
    #[arg(long, global = true, env = "AUTOPILOT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline against a local sandbox (fake ARM, BIND 9 if installed,
    /// embedded queue): endpoints created and deleted, DNS printed as it converges.
    #[cfg(feature = "sandbox")]
    Demo {
        /// Put the Elastic zone on a local BIND 9: auto (if `named` is installed), on, off.
        #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
        bind: String,
        /// Write the logs to this file (its path is printed) instead of stderr, where only
        /// warnings and errors go by default (`AUTOPILOT_LOG=info` for more).
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Start the fakes (ARM, ClickHouse, Elastic, Zilliz, Service Bus) on loopback and run
    /// until interrupted; the first stdout line is JSON with their URLs and the
    /// environment `autopilot serve` needs to use them.
    #[cfg(feature = "sandbox")]
    Sandbox,
    /// Run the custom handler (started by the Functions host on FUNCTIONS_CUSTOMHANDLER_PORT).
    Serve {
        /// Port when not started by the host.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT", default_value = "8080")]
        port: u16,
    },
    /// Show what reconciling would do, without doing it: one endpoint, or (with
    /// --subscription, repeatable) what the sweep would do across subscriptions.
    Plan {
        endpoint: Option<String>,
        #[arg(long = "subscription")]
        subscriptions: Vec<String>,
        /// What the next target-side scan would decide (`approvals.target_scopes`).
        #[arg(long)]
        targets: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One endpoint's DNS, vendor and approval state side by side (read-only).
    Status {
        endpoint: String,
        #[arg(long)]
        json: bool,
    },
    /// Dead-lettered work: list, or replay by id (or `all`).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Assemble the deployable function app from this binary: `cargo run --release -- package`.
    Package {
        /// The handler binary to ship (default: the running `autopilot` itself).
        #[arg(long)]
        binary: Option<PathBuf>,
        #[arg(long, default_value = "dist")]
        out: PathBuf,
    },
    /// Load and validate the configuration, then print it.
    CheckConfig,
    /// Read-only checks of the live deployment (permissions, Event Grid coverage, zones,
    /// vendor secrets and keys, Service Bus, audit topic): a checklist with the fix for
    /// every failure; exits non-zero when something is wrong.
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    List {
        #[arg(long)]
        json: bool,
    },
    Replay {
        id: String,
    },
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    Config::load(path, std::env::vars()).map_err(|e| e.to_string())
}

/// The configured queue: the embedded SQLite file, or Service Bus (for `dlq` against Azure).
fn open_queue(config: &Config) -> Result<Arc<dyn WorkQueue>, String> {
    if config.queue.kind == "servicebus" {
        return Ok(open_service_bus(config)?);
    }
    let q =
        SqliteQueue::open(Path::new(&config.queue.path)).map_err(|e| format!("queue {}: {e}", config.queue.path))?;
    Ok(Arc::new(q))
}

fn open_service_bus(config: &Config) -> Result<Arc<ServiceBusQueue>, String> {
    let settings = app::service_bus_settings(config);
    // The managed identity is the app's one identity: the same token source as ARM's
    // (which is also how a local emulator's static token reaches Service Bus).
    let creds = match &settings.auth {
        ServiceBusAuth::ManagedIdentity { .. } => ServiceBusCredentials::Tokens(credential(config)?),
        ServiceBusAuth::Sas { .. } => {
            ServiceBusCredentials::from_settings(&settings).map_err(|e| format!("service bus: {e}"))?
        }
    };
    Ok(Arc::new(ServiceBusQueue::connect(settings, creds).map_err(|e| format!("service bus: {e}"))?))
}

/// A fixed bearer token for local fakes (the sandbox, benchmarks). Only accepted when ARM
/// is on loopback, so it can never be sent to Azure or anywhere else.
const STATIC_TOKEN_ENV: &str = "AUTOPILOT_ARM_STATIC_TOKEN";

fn credential(config: &Config) -> Result<Arc<dyn TokenSource>, String> {
    if let Ok(token) = std::env::var(STATIC_TOKEN_ENV) {
        let loopback = url::Url::parse(&config.arm.base_url)
            .is_ok_and(|u| private_link_autopilot::model::endpoint_url::is_loopback(&u));
        if !loopback {
            return Err(format!("{STATIC_TOKEN_ENV} is only accepted when arm.base_url is a loopback address"));
        }
        return Ok(Arc::new(StaticToken(Secret::new(token))));
    }
    let id = (!config.arm.managed_identity_client_id.is_empty()).then(|| config.arm.managed_identity_client_id.clone());
    let source = AzureTokenSource::from_env(id).map_err(|e| format!("Azure credential: {e}"))?;
    Ok(Arc::new(source))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autopilot: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs: the configured format and level on stderr, JSON under the Functions host. The
/// demo's product is its stdout narrative, so its logs default to warnings only (or go to
/// `--log-file`); `AUTOPILOT_LOG` overrides the level everywhere.
fn init_logging(#[allow(unused_variables)] command: &Command, config: &Config) -> Result<(), String> {
    let format = telemetry::effective_format(&config.log.format, |k| std::env::var(k).ok());
    #[allow(unused_mut)]
    let mut options = telemetry::LogOptions { format, filter: config.log.filter.clone(), file: None };
    #[cfg(feature = "sandbox")]
    if let Command::Demo { log_file, .. } = command {
        if log_file.is_none() {
            options.filter = "warn".into();
        }
        options.file = log_file.clone();
    }
    telemetry::init_with(&options)
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = load_config(cli.config.as_deref())?;
    init_logging(&cli.command, &config)?;
    match cli.command {
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Package { binary, out } => {
            let binary = match binary {
                Some(b) => b,
                None if cfg!(feature = "sandbox") => {
                    return Err("this build contains the sandbox (the fakes); package the deployable one: \
                         cargo run --release -p autopilot --no-default-features -- package"
                        .into());
                }
                None => std::env::current_exe().map_err(|e| format!("cannot locate this binary: {e}"))?,
            };
            let zip = packaging::package(Path::new(env!("CARGO_MANIFEST_DIR")), &binary, &out)?;
            println!("function app folder: {}\nzip: {}", out.join("app").display(), zip.display());
            Ok(())
        }
        Command::Serve { port } => serve(config, port).await,
        #[cfg(feature = "sandbox")]
        Command::Sandbox => autopilot_sandbox::standalone::run().await,
        #[cfg(feature = "sandbox")]
        Command::Demo { bind, log_file } => {
            use autopilot_sandbox::demo::{self, BindChoice};
            let choice = match bind.as_str() {
                "on" => BindChoice::Required,
                "off" => BindChoice::Off,
                _ => BindChoice::Auto,
            };
            if let Some(path) = &log_file {
                println!("logs: {}", path.display());
            }
            demo::run(choice).await.map(|_| ())
        }
        Command::Plan { endpoint, subscriptions, targets, json } => {
            let app = build_for_cli(config)?;
            if targets {
                let report = ops::plan_targets(&app).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                } else {
                    for (endpoint, d) in &report.decisions {
                        println!("{} {}: {:?}: {} ({endpoint})", d.target, d.connection, d.action, d.reason);
                    }
                    println!("{} Pending connections listed", report.listed);
                }
                return Ok(());
            }
            match (endpoint, subscriptions.is_empty()) {
                (Some(endpoint), true) => {
                    let id = ResourceId::parse_private_endpoint(&endpoint).map_err(|e| e.to_string())?;
                    let report = app.reconciler.reconcile(&id, Mode::DryRun).await;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                    } else {
                        println!("{}", format_report(&report));
                    }
                    Ok(())
                }
                (None, false) => plan_subscriptions(&app, &subscriptions, json).await,
                _ => Err("give either a private endpoint id or --subscription (repeatable), not both".into()),
            }
        }
        Command::Status { endpoint, json } => {
            let id = ResourceId::parse_private_endpoint(&endpoint).map_err(|e| e.to_string())?;
            let app = build_for_cli(config)?;
            let status = ops::endpoint_status(&app, &id).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            } else {
                print!("{}", status.render());
            }
            Ok(())
        }
        Command::Doctor { json } => doctor(config, json).await,
        Command::Dlq { action } => {
            let queue = open_queue(&config)?;
            match action {
                DlqAction::List { json } => {
                    let dead = queue.dead_letters().await.map_err(|e| e.to_string())?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&dead).unwrap_or_default());
                        return Ok(());
                    }
                    for d in dead {
                        println!(
                            "{}  deliveries={}  {}\n    reason: {}",
                            d.message_id, d.delivery_count, d.correlation_id, d.reason
                        );
                    }
                }
                DlqAction::Replay { id } => {
                    let ids: Vec<String> = if id == "all" {
                        queue
                            .dead_letters()
                            .await
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .map(|d| d.message_id)
                            .collect()
                    } else {
                        vec![id]
                    };
                    for id in ids {
                        match queue.replay(&id).await {
                            Ok(()) => println!("replayed {id}"),
                            Err(e) => println!("{id}: {e}"),
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// The application as the CLI commands use it (same wiring as `serve`, no workers).
fn build_for_cli(config: Config) -> Result<App, String> {
    let queue = open_queue(&config)?;
    let cred = credential(&config)?;
    let routes = app::rfc2136_routes(&config, |k| std::env::var(k).ok())?;
    App::build(config, cred, queue, routes)
}

/// `autopilot doctor`. Vendor clients are built by the checks themselves (one at a time,
/// so one missing key does not stop the others from being checked).
async fn doctor(config: Config, json: bool) -> Result<(), String> {
    let mut without_vendors = config;
    without_vendors.vendors.clickhouse.enabled = false;
    without_vendors.vendors.elastic.enabled = false;
    without_vendors.vendors.zilliz.enabled = false;
    let vendors = std::mem::take(&mut without_vendors.vendors);
    let mut app = build_for_cli(without_vendors)?;
    app.config.vendors = vendors;
    let report = private_link_autopilot::doctor::run(&app, &|k| std::env::var(k).ok()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        use std::io::IsTerminal;
        print!("{}", report.render(std::io::stdout().is_terminal()));
    }
    if report.ok { Ok(()) } else { Err(format!("doctor: {} check(s) failed", report.failed)) }
}

async fn plan_subscriptions(app: &App, subscriptions: &[String], json: bool) -> Result<(), String> {
    let started = std::time::Instant::now();
    let last = std::sync::Mutex::new(started);
    let progress = |done: usize, total: usize| {
        let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if done == total || last.elapsed() >= ops::PROGRESS_EVERY {
            eprintln!("planned {done}/{total} endpoints ({} s)", started.elapsed().as_secs());
            *last = std::time::Instant::now();
        }
    };
    let plan = sweep::plan_subscriptions(app, subscriptions, &progress).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{} listed, {} more own DNS records, {} more are in the vendor ledger; {} unchanged, {} would change:",
        plan.listed,
        plan.dns_owners_not_listed,
        plan.vendor_registrations_not_listed,
        plan.unchanged,
        plan.changes.len()
    );
    for report in &plan.changes {
        println!("  {}", format_report(report));
        for v in report.vendors.iter().filter(|v| v.needs_work()) {
            println!("      vendor {}: {:?}", v.vendor, v.intent);
        }
    }
    Ok(())
}

async fn serve(config: Config, port: u16) -> Result<(), String> {
    let cred = credential(&config)?;
    let workers = config.queue.workers;
    let lock = Duration::from_secs(config.queue.lock_secs);
    let routes = app::rfc2136_routes(&config, |k| std::env::var(k).ok())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = if config.queue.kind == "servicebus" {
        // In Azure the host's WorkQueue trigger consumes the queue: no workers here.
        let sb = open_service_bus(&config)?;
        Arc::new(App::build(config, cred, sb.clone(), routes)?.with_trigger_queue(sb))
    } else {
        let app = Arc::new(App::build(config.clone(), cred, open_queue(&config)?, routes)?);
        for _ in 0..workers {
            tokio::spawn(worker::run(
                app.queue.clone(),
                app.reconciler.clone(),
                app.retry.clone(),
                lock,
                stop_rx.clone(),
            ));
        }
        app
    };
    // The host calls http://127.0.0.1:{port}: bind the IPv4 loopback literal.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "custom handler listening");
    axum::serve(listener, server::router(app))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(|e| e.to_string())
}
