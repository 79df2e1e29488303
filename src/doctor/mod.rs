//! `autopilot doctor`: read-only checks of a live deployment, as a checklist.
//!
//! Why: a deployment can be wrong in ways no single request shows. A subscription added
//! to `sweep.subscriptions` without its Event Grid topic converges only at each sweep; a
//! role assignment removed by hand shows up as one 403 in a log among thousands; a zone
//! without its VNet link resolves nowhere; a vendor key that expired fails only on the
//! next registration. Doctor reads each of these once, and says for every ✗ what to run.
//!
//! What it checks, each from the source the product itself uses (never a second list):
//!
//! * **permissions**: the grants `infra/` assigns for this configuration
//!   ([`required`], from `infra/permissions.json`) against ARM's permissions API at each
//!   scope ([`crate::arm::permissions`]): the *caller's* effective permissions, so run it
//!   with the app's managed identity (`arm.managed_identity_client_id`) to check the app;
//!   with `coverage.create_missing`, also the Event Grid writes it needs;
//! * **coverage**: each subscription in `sweep.subscriptions` has its system topic and an
//!   event subscription of infra's shape to the function ([`crate::reconcile::coverage`],
//!   the check the sweep runs too);
//! * **zones**: each Azure zone in `dns.zones` exists and is linked to every VNet in
//!   `doctor.zone_links` (or to at least one VNet when none is listed);
//! * **vendor secrets**: each enabled vendor's key variables are set and resolved (an
//!   unresolved Key Vault reference stays `@Microsoft.KeyVault(...)` in the app setting);
//!   where they are not set here, the vault is asked through ARM whether the secret exists
//!   (metadata only: ARM never returns a secret's value);
//! * **vendor keys**: one read-only call per enabled vendor with its key;
//! * **Service Bus and audit topic**: the work queue and the audit topic exist (ARM reads).
//!
//! A check the credential cannot perform is shown as skipped (–) with the reason, not as
//! a failure; the exit code is non-zero when any check fails.

mod checks;
pub mod required;

use serde::Serialize;

use crate::app::App;

// The `[doctor]` section is defined with the rest of the config, which the doctor reads.
pub use crate::config::DoctorSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Skipped,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `permissions`, `coverage`, `zones`, `secrets`, `vendors`, `servicebus`, `audit`.
    pub area: &'static str,
    /// What was checked (a scope, a subscription, a zone...).
    pub subject: String,
    pub status: Status,
    pub detail: String,
    /// For a failure: what to run or set.
    pub fix: Option<String>,
}

impl Check {
    fn ok(area: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { area, subject: subject.into(), status: Status::Ok, detail: detail.into(), fix: None }
    }
    fn fail(area: &'static str, subject: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { area, subject: subject.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn skipped(area: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { area, subject: subject.into(), status: Status::Skipped, detail: detail.into(), fix: None }
    }
}

/// Everything doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub failed: usize,
    pub skipped: usize,
    pub passed: usize,
    /// Whose permissions the permission checks show.
    pub credential: String,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(credential: String, checks: Vec<Check>) -> Self {
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        let failed = count(Status::Fail);
        Self { ok: failed == 0, failed, skipped: count(Status::Skipped), passed: count(Status::Ok), credential, checks }
    }

    /// The human checklist. `color`: ANSI green/red marks (only on a terminal).
    pub fn render(&self, color: bool) -> String {
        let paint = |code: &str, s: &str| if color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_owned() };
        let mut out = format!("autopilot doctor (permissions as seen by {})\n", self.credential);
        let mut area = "";
        for c in &self.checks {
            if c.area != area {
                area = c.area;
                out.push_str(&format!("\n{area}\n"));
            }
            let mark = match c.status {
                Status::Ok => paint("32", "✔"),
                Status::Fail => paint("31", "✗"),
                Status::Skipped => paint("33", "–"),
            };
            out.push_str(&format!("  {mark} {}: {}\n", c.subject, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("      fix: {fix}\n"));
            }
        }
        out.push_str(&format!("\n{} passed, {} failed, {} skipped\n", self.passed, self.failed, self.skipped));
        out
    }
}

/// Runs every check (reads only). `env` resolves the vendor key variables, as the app
/// does (`std::env::var` from the CLI).
pub async fn run(app: &App, env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Report {
    let config = &app.config;
    let credential = if config.arm.managed_identity_client_id.is_empty() {
        "this process's credential (set AUTOPILOT__ARM__MANAGED_IDENTITY_CLIENT_ID to check the app's identity)"
            .to_owned()
    } else {
        format!("managed identity {}", config.arm.managed_identity_client_id)
    };
    let mut all = Vec::new();
    all.extend(checks::permissions(app).await);
    all.extend(checks::coverage(app).await);
    all.extend(checks::zones(app).await);
    all.extend(checks::secrets(app, env).await);
    all.extend(checks::vendors(app, env).await);
    all.extend(checks::service_bus(app).await);
    all.extend(checks::audit_topic(app).await);
    Report::new(credential, all)
}
