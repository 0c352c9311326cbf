//! The Prometheus metrics of docs/design/contract.md, and their exposition.
//!
//! Per-client gauges are rewritten after every reconcile from what it observed, and a client's
//! series are removed when the client leaves the config, so a scrape always shows current state.
//! Served as Prometheus text 0.0.4 by default and as OpenMetrics when the scraper asks for it.
//!
//! Over 600 lines: every series the daemon exports is declared here, as
//! `docs/design/contract.md` lists them, with the text 0.0.4 rewrite; one file is the
//! contract's one place.

use std::collections::{BTreeMap, HashMap};

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabel {
    pub client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    service: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkResultLabels {
    sink: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// What one reconcile learnt about a client, for the gauges.
#[derive(Debug, Clone, Default)]
pub struct ClientGauges {
    pub secret_expiry: Option<f64>,
    pub next_rotation: Option<f64>,
    pub last_rotation: Option<f64>,
    pub ready: bool,
    /// (key id, owned by this installation, expiry)
    pub credentials: Vec<(KeyId, bool, f64)>,
}

/// A credential's key id as the scrape writes it. Graph's are GUIDs: kept in their 16 bytes
/// instead of a string of 36 (two or three a client, held for as long as the client is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyId {
    /// Written back as it came: lowercase, hyphenated.
    Guid(uuid::Uuid),
    Other(Box<str>),
}

impl KeyId {
    /// Calls `f` with the key id as text.
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            KeyId::Guid(id) => f(id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())),
            KeyId::Other(s) => f(s),
        }
    }
}

impl From<&str> for KeyId {
    fn from(s: &str) -> KeyId {
        match uuid::Uuid::try_parse(s) {
            Ok(id)
                if id
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    == s =>
            {
                KeyId::Guid(id)
            }
            _ => KeyId::Other(s.into()),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    clients: Arc<ClientStates>,
    ha: Arc<HaStates>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<OperationLabels, Histogram>,
    propagation: Histogram,
    ready: Gauge,
    budget_max: Gauge,
    budget_used: Gauge,
    reconciles_max: Gauge,
    reconciles_running: Gauge,
    event_deliveries: Family<SinkResultLabels, Counter>,
    event_sink_failing: Family<SinkLabel, Gauge>,
    events_pending: Family<SinkLabel, Gauge>,
    verify_url_ok: Family<ClientLabel, Gauge>,
    discovery_refused: Family<AppLabel, Gauge>,
}

fn request_histogram() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// The per-client gauges, kept as one compact record per client and written out at scrape
/// time: with ten thousand clients, a labelled series object per gauge would cost more memory
/// than everything else the daemon holds.
#[derive(Debug, Default)]
struct ClientStates {
    /// By name, the order a scrape writes them in: a scrape walks the records in step with its
    /// list of names instead of looking each client up once per family (80,000 SipHash lookups
    /// were a seventh of a scrape of 10,000 clients).
    clients: Mutex<BTreeMap<Arc<str>, ClientRecord>>,
    /// The drift each client shows now (`src/drift.rs`); only clients with some.
    drift: Mutex<HashMap<String, Vec<crate::drift::DriftKind>>>,
    /// The tenant inventory's series (`src/inventory.rs`), replaced whole after each listing.
    tenant: Mutex<Arc<Vec<crate::inventory::Series>>>,
    /// Bytes a client took in each per-client family of the last scrape, to size the next.
    bytes_per_client: [AtomicUsize; CLIENT_FAMILIES],
}

/// A client's series: its gauges once something reported on it, and its counters from its
/// registration (a labelled counter object each cost about 150 bytes and two label strings;
/// three a client were the largest part of the per-client memory after the config).
#[derive(Debug, Default)]
struct ClientRecord {
    /// `None` until a reconcile or the scheduler reports on the client, and again once an HA
    /// replica stops leading.
    gauges: Option<ClientGauges>,
    rotations_success: u64,
    rotations_failure: u64,
    orphans_removed: u64,
}

/// The per-client families, in this order; a scrape writes each for a batch of clients at a
/// time ([`Scrape`]).
const CLIENT_FAMILIES: usize = 8;
/// Clients a piece of a scrape covers: about 100 KiB of text, and what the runtime's one worker
/// waits for when a scrape is written (`/metrics` in `src/server.rs`). A piece costs a lock, a
/// search in the records and a buffer, no longer a registry of its own (which made pieces of
/// 1,000 twice as slow as pieces of 10,000 before [`write_clients`]).
const SCRAPE_BATCH: usize = 1_000;

/// A per-client family: its name after the prefix, its help, whether it is a counter.
struct ClientFamily {
    name: &'static str,
    help: &'static str,
    counter: bool,
}

/// The per-client families, in scrape order ([`write_clients`] writes each one's samples).
const CLIENT_FAMILY: [ClientFamily; CLIENT_FAMILIES] = [
    ClientFamily {
        name: "rotations",
        help: "Rotation attempts by result",
        counter: true,
    },
    ClientFamily {
        name: "orphans_removed",
        help: "Credentials of failed or abandoned attempts removed",
        counter: true,
    },
    ClientFamily {
        name: "secret_expiry_timestamp_seconds",
        help: "Expiry of the secret published in Key Vault, as a Unix timestamp",
        counter: false,
    },
    ClientFamily {
        name: "next_rotation_timestamp_seconds",
        help: "When the client's secret is next due for rotation, as a Unix timestamp",
        counter: false,
    },
    ClientFamily {
        name: "last_rotation_timestamp_seconds",
        help: "Last successful rotation of the client's secret, as a Unix timestamp",
        counter: false,
    },
    ClientFamily {
        name: "client_ready",
        help: "1 when the client's last reconcile succeeded and its published secret is valid",
        counter: false,
    },
    ClientFamily {
        name: "credentials",
        help: "Password credentials on the client's application, by owner",
        counter: false,
    },
    ClientFamily {
        name: "credential_expiry_timestamp_seconds",
        help: "Expiry of every password credential on the client's application, as a Unix timestamp",
        counter: false,
    },
];

const PREFIX: &str = "secret_rotator_";

/// A family's `HELP` and `TYPE` as prometheus-client writes them, and as [`Text004`] rewrites
/// them for text 0.0.4 (a counter is named there by its `_total` series).
fn write_client_family_head(out: &mut String, family: usize, openmetrics: bool) {
    let f = &CLIENT_FAMILY[family];
    let total = if f.counter && !openmetrics {
        "_total"
    } else {
        ""
    };
    let kind = if f.counter { "counter" } else { "gauge" };
    for (line, text) in [("# HELP ", f.help), ("# TYPE ", kind)] {
        out.push_str(line);
        out.push_str(PREFIX);
        out.push_str(f.name);
        out.push_str(total);
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
}

/// A sample's value, formatted as prometheus-client formats it (itoa, dtoa).
#[derive(Clone, Copy)]
enum Value {
    Count(u64),
    Int(i64),
    Float(f64),
}

/// One sample line, `series{label="value",...} value`: the same in both formats.
fn write_sample(out: &mut String, series: &str, labels: &[(&str, &str)], value: Value) {
    out.push_str(series);
    out.push('{');
    for (i, (key, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        write_label_value(out, v);
        out.push('"');
    }
    out.push_str("} ");
    match value {
        Value::Count(n) => out.push_str(itoa::Buffer::new().format(n)),
        Value::Int(n) => out.push_str(itoa::Buffer::new().format(n)),
        Value::Float(v) => out.push_str(dtoa::Buffer::new().format(v)),
    }
    out.push('\n');
}

/// A label value with `\\`, `"` and newlines escaped, as both formats require.
fn write_label_value(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The clients of `names` (sorted) still in `records`, with their records: both walked in
/// name order, the records from the first name on.
fn present<'a>(
    records: &'a BTreeMap<Arc<str>, ClientRecord>,
    names: &'a [Arc<str>],
) -> impl Iterator<Item = (&'a str, &'a ClientRecord)> {
    use std::ops::Bound;
    let from = names
        .first()
        .map_or(Bound::Unbounded, |n| Bound::Included(&**n));
    let mut records = records.range::<str, _>((from, Bound::Unbounded)).peekable();
    names.iter().filter_map(move |name| {
        loop {
            let (key, record) = records.peek()?;
            // The names are the records' own keys, cloned: the same pointer, unless the
            // client left and came back since.
            let order = if Arc::ptr_eq(key, name) {
                std::cmp::Ordering::Equal
            } else {
                (***key).cmp(&**name)
            };
            match order {
                // A client added since the names were taken: in the next scrape.
                std::cmp::Ordering::Less => {
                    records.next();
                }
                std::cmp::Ordering::Equal => {
                    let record = *record;
                    records.next();
                    return Some((&**name, record));
                }
                // Gone since.
                std::cmp::Ordering::Greater => return None,
            }
        }
    })
}

/// Writes per-client family `family`'s samples for the clients `names` (those still there)
/// straight into `out`. Through prometheus-client's encoder each sample was about fifteen
/// calls through `dyn Write`, and the text 0.0.4 rewrite copied every line once more: most of
/// a scrape's time at 10,000 clients. `tests::per_client_families_match_the_reference_encoder`
/// holds the two to the same bytes.
fn write_clients(
    records: &BTreeMap<Arc<str>, ClientRecord>,
    names: &[Arc<str>],
    family: usize,
    out: &mut String,
) {
    let f = &CLIENT_FAMILY[family];
    let mut series = String::with_capacity(PREFIX.len() + f.name.len() + 6);
    series.push_str(PREFIX);
    series.push_str(f.name);
    if f.counter {
        series.push_str("_total");
    }
    let series = series.as_str();
    for (client, r) in present(records, names) {
        match family {
            0 => {
                for (result, n) in [
                    ("success", r.rotations_success),
                    ("failure", r.rotations_failure),
                ] {
                    let labels = [("client", client), ("result", result)];
                    write_sample(out, series, &labels, Value::Count(n));
                }
            }
            1 => {
                let n = Value::Count(r.orphans_removed);
                write_sample(out, series, &[("client", client)], n);
            }
            // The gauges only of the clients something reported on.
            _ => {
                let Some(g) = r.gauges.as_ref() else {
                    continue;
                };
                let timestamp = match family {
                    2 => g.secret_expiry,
                    3 => g.next_rotation,
                    4 => g.last_rotation,
                    _ => None,
                };
                match family {
                    2..=4 => {
                        if let Some(v) = timestamp {
                            write_sample(out, series, &[("client", client)], Value::Float(v));
                        }
                    }
                    5 => {
                        let ready = Value::Int(i64::from(g.ready));
                        write_sample(out, series, &[("client", client)], ready);
                    }
                    6 => {
                        let ours = g.credentials.iter().filter(|c| c.1).count() as i64;
                        let others = g.credentials.len() as i64 - ours;
                        for (owner, n) in [("rotator", ours), ("other", others)] {
                            let labels = [("client", client), ("owner", owner)];
                            write_sample(out, series, &labels, Value::Int(n));
                        }
                    }
                    _ => {
                        for (key_id, ours, expiry) in &g.credentials {
                            let owner = if *ours { "rotator" } else { "other" };
                            key_id.with_str(|key_id| {
                                let labels =
                                    [("client", client), ("key_id", key_id), ("owner", owner)];
                                write_sample(out, series, &labels, Value::Float(*expiry));
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The drift and the tenant inventory: written with the registry's other series.
impl Collector for ClientStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Only the drift found is exported (1): a series per kind and client at zero would
        // multiply the scrape for nothing an alert needs.
        let drift = self.drift.lock().unwrap_or_else(|p| p.into_inner());
        let mut family = encoder.encode_descriptor(
            "drift",
            "1 while a drift check finds this kind of drift on the client's published secret",
            None,
            MetricType::Gauge,
        )?;
        let mut names: Vec<&String> = drift.keys().collect();
        names.sort();
        for client in names {
            for kind in &drift[client] {
                family
                    .encode_family(&[("client", client.as_str()), ("kind", kind.as_str())])?
                    .encode_gauge(&1i64)?;
            }
        }
        drop(drift);
        // The list is swapped whole by the inventory; the scrape writes from its own handle.
        let tenant = self
            .tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut family = encoder.encode_descriptor(
            "tenant_credential_expiry_timestamp_seconds",
            "Expiry of every password and certificate credential of the tenant's applications (the inventory), as a Unix timestamp",
            None,
            MetricType::Gauge,
        )?;
        for s in tenant.iter() {
            family
                .encode_family(&[
                    ("app_id", &*s.app_id),
                    ("app", &*s.app),
                    ("key_id", &*s.key_id),
                    ("kind", s.kind.as_str()),
                    ("managed", if s.managed { "true" } else { "false" }),
                ])?
                .encode_gauge(&s.expiry)?;
        }
        Ok(())
    }
}

/// High availability's series, written only once a replica takes part in an election (a
/// daemon without HA exports none of them).
#[derive(Debug, Default)]
struct HaStates {
    state: Mutex<Option<HaState>>,
}

#[derive(Debug, Default)]
struct HaState {
    replica: String,
    leader: bool,
    transitions: u64,
    renewal_failures: u64,
}

impl Collector for HaStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::NoLabelSet;
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = state.as_ref() else {
            return Ok(());
        };
        encoder
            .encode_descriptor(
                "leader",
                "1 while this replica holds the leader lease",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&[("replica", s.replica.as_str())])?
            .encode_gauge(&i64::from(s.leader))?;
        for (name, help, value) in [
            (
                "leader_transitions",
                "Times this replica became or stopped being the leader",
                s.transitions,
            ),
            (
                "lease_renewal_failures",
                "Renewals of the leader lease that failed",
                s.renewal_failures,
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("secret_rotator");
        let clients = Arc::new(ClientStates::default());
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<OperationLabels, Histogram>::new_with_constructor(
            request_histogram as fn() -> Histogram,
        );
        let propagation =
            Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]);
        let ready = Gauge::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);

        registry.register_collector(Box::new(clients.clone()));
        let ha = Arc::new(HaStates::default());
        registry.register_collector(Box::new(ha.clone()));
        registry.register(
            "azure_requests",
            "Requests to Azure by service, operation and answer status",
            requests.clone(),
        );
        registry.register(
            "azure_request_duration_seconds",
            "Duration of requests to Azure",
            request_duration.clone(),
        );
        registry.register(
            "propagation_seconds",
            "Time from addPassword until the new secret first signed in",
            propagation.clone(),
        );
        registry.register("build_info", "Build information; always 1", build_info);
        registry.register(
            "ready",
            "1 once the config is loaded and the daemon could sign in to Azure (as /readyz)",
            ready.clone(),
        );

        let reconciles_max = Gauge::default();
        let reconciles_running = Gauge::default();
        registry.register(
            "reconciles_max",
            "Scheduled reconciles that may run at once (daemon.max_concurrent, or what \"auto\" sized from the write quota)",
            reconciles_max.clone(),
        );
        registry.register(
            "reconciles_running",
            "Reconciles running now",
            reconciles_running.clone(),
        );
        let budget_max = Gauge::default();
        let budget_used = Gauge::default();
        registry.register(
            "rotation_budget_max",
            "daemon.max_rotations_per_hour (0: no budget)",
            budget_max.clone(),
        );
        registry.register(
            "rotation_budget_used",
            "Rotations published (or in flight) in the last hour, counted against the budget",
            budget_used.clone(),
        );
        let event_deliveries = Family::<SinkResultLabels, Counter>::default();
        registry.register(
            "event_deliveries",
            "Event delivery attempts by sink and result (success, failure, dropped)",
            event_deliveries.clone(),
        );
        let event_sink_failing = Family::<SinkLabel, Gauge>::default();
        registry.register(
            "event_sink_failing",
            "1 while a sink's oldest undelivered event has failed for longer than its retry cap",
            event_sink_failing.clone(),
        );
        let events_pending = Family::<SinkLabel, Gauge>::default();
        registry.register(
            "events_pending",
            "Events in the outbox not yet delivered to the sink",
            events_pending.clone(),
        );

        let verify_url_ok = Family::<ClientLabel, Gauge>::default();
        registry.register(
            "verify_url_ok",
            "1 when the last call to the client's verify_url with a new or published secret's token answered 2xx, 0 when it did not (401/403: the app lacks its role)",
            verify_url_ok.clone(),
        );
        let discovery_refused = Family::<AppLabel, Gauge>::default();
        registry.register(
            "discovery_refused",
            "1 for each application discovery found and refused (a collision with a configured client or another discovered one, or a bad location tag), as of the last pass",
            discovery_refused.clone(),
        );
        Metrics {
            budget_max,
            budget_used,
            reconciles_max,
            reconciles_running,
            event_deliveries,
            event_sink_failing,
            events_pending,
            discovery_refused,
            verify_url_ok,
            registry,
            clients,
            ha,
            requests,
            request_duration,
            propagation,
            ready,
        }
    }

    pub fn azure_request(&self, service: &str, operation: &str, status: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.into(),
                operation: operation.into(),
                status: status.into(),
            })
            .inc();
        self.request_duration
            .get_or_create(&OperationLabels {
                service: service.into(),
                operation: operation.into(),
            })
            .observe(seconds);
    }

    pub fn rotation(&self, client: &str, success: bool) {
        self.with_record(client, |r| {
            if success {
                r.rotations_success += 1;
            } else {
                r.rotations_failure += 1;
            }
        });
    }

    pub fn orphan_removed(&self, client: &str) {
        self.with_record(client, |r| r.orphans_removed += 1);
    }

    fn with_ha(&self, f: impl FnOnce(&mut HaState)) {
        let mut state = self.ha.state.lock().unwrap_or_else(|p| p.into_inner());
        f(state.get_or_insert_with(HaState::default));
    }

    /// This replica takes part in an election: its HA series appear.
    pub fn ha_replica(&self, replica: &str) {
        self.with_ha(|s| s.replica = replica.to_string());
    }

    /// This replica became (`true`) or stopped being the leader.
    pub fn ha_transition(&self, leader: bool) {
        self.with_ha(|s| {
            s.leader = leader;
            s.transitions += 1;
        });
    }

    pub fn ha_renewal_failed(&self) {
        self.with_ha(|s| s.renewal_failures += 1);
    }

    /// The applications the last discovery pass refused (the others' series go).
    pub fn set_discovery_refused(&self, app_ids: &[String]) {
        self.discovery_refused.clear();
        for a in app_ids {
            self.discovery_refused
                .get_or_create(&AppLabel { app_id: a.clone() })
                .set(1);
        }
    }

    pub fn set_verify_url_ok(&self, client: &str, ok: bool) {
        self.verify_url_ok
            .get_or_create(&ClientLabel {
                client: client.into(),
            })
            .set(i64::from(ok));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn set_reconciles(&self, max: usize, running: usize) {
        self.reconciles_max.set(max as i64);
        self.reconciles_running.set(running as i64);
    }

    pub fn set_budget(&self, max: u32, used: u32) {
        self.budget_max.set(i64::from(max));
        self.budget_used.set(i64::from(used));
    }

    pub fn event_delivery(&self, sink: &str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.event_deliveries
            .get_or_create(&SinkResultLabels {
                sink: sink.into(),
                result: result.into(),
            })
            .inc();
    }

    /// An undelivered event dropped for its age.
    pub fn event_dropped(&self, sink: &str) {
        self.event_deliveries
            .get_or_create(&SinkResultLabels {
                sink: sink.into(),
                result: "dropped".into(),
            })
            .inc();
    }

    /// A sink's state after a delivery round: events waiting, and whether it is failing.
    pub fn set_sink(&self, sink: &str, pending: i64, failing: bool) {
        let label = SinkLabel { sink: sink.into() };
        self.events_pending.get_or_create(&label).set(pending);
        self.event_sink_failing
            .get_or_create(&label)
            .set(i64::from(failing));
        for result in ["success", "failure"] {
            let _ = self.event_deliveries.get_or_create(&SinkResultLabels {
                sink: sink.into(),
                result: result.into(),
            });
        }
    }

    /// A sink that left the config leaves no series.
    pub fn remove_sink(&self, sink: &str) {
        let label = SinkLabel { sink: sink.into() };
        self.events_pending.remove(&label);
        self.event_sink_failing.remove(&label);
        for result in ["success", "failure"] {
            self.event_deliveries.remove(&SinkResultLabels {
                sink: sink.into(),
                result: result.into(),
            });
        }
    }

    pub fn propagation(&self, seconds: f64) {
        self.propagation.observe(seconds);
    }

    /// Makes sure the client's counters exist (at zero), so alerts and dashboards see them
    /// before the first rotation.
    pub fn register_client(&self, client: &str) {
        self.with_record(client, |_| {});
    }

    /// [`Metrics::register_client`] for many clients at once, keyed by the config's own `Arc`
    /// of each name (no copy of it). The new records are merged into the map in one pass, which
    /// packs its nodes full: inserted one at a time in name order, a B-tree splits each full
    /// node in two and leaves them about half full, 210 bytes a client instead of 120.
    pub fn register_clients(&self, names: impl IntoIterator<Item = Arc<str>>) {
        let mut clients = self
            .clients
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut new: BTreeMap<Arc<str>, ClientRecord> = names
            .into_iter()
            .filter(|name| !clients.contains_key(&**name))
            .map(|name| (name, ClientRecord::default()))
            .collect();
        clients.append(&mut new);
    }

    fn with_record(&self, client: &str, f: impl FnOnce(&mut ClientRecord)) {
        let mut clients = self
            .clients
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match clients.get_mut(client) {
            Some(r) => f(r),
            None => {
                let mut r = ClientRecord::default();
                f(&mut r);
                clients.insert(client.into(), r);
            }
        }
    }

    fn with_client(&self, client: &str, f: impl FnOnce(&mut ClientGauges)) {
        self.with_record(client, |r| f(r.gauges.get_or_insert_with(Default::default)));
    }

    /// Records what a reconcile learnt. The last rotation time is kept when the reconcile did
    /// not know it.
    pub fn set_client(&self, client: &str, g: &ClientGauges) {
        self.with_client(client, |current| {
            let last = g.last_rotation.or(current.last_rotation);
            *current = g.clone();
            current.last_rotation = last;
            current.credentials.shrink_to_fit();
        });
    }

    /// Marks a client not ready (its last reconcile failed).
    pub fn set_client_ready(&self, client: &str, ready: bool) {
        self.with_client(client, |g| g.ready = ready);
    }

    /// Sets only the next-rotation time (the scheduler knows it before any reconcile).
    pub fn set_next_rotation(&self, client: &str, at: f64) {
        self.with_client(client, |g| g.next_rotation = Some(at));
    }

    /// Drops every client's gauges (not the counters): an HA replica that stops leading no
    /// longer observes the clients, and its last figures would go stale (an expiry that the
    /// new leader has long rotated away would fire the expiry alerts).
    pub fn forget_client_gauges(&self) {
        for r in self
            .clients
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            r.gauges = None;
        }
        self.clients
            .drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Replaces the tenant inventory's series.
    pub fn set_tenant(&self, series: Vec<crate::inventory::Series>) {
        *self
            .clients
            .tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(series);
    }

    /// The drift last reported for a client.
    pub fn drift(&self, client: &str) -> Vec<crate::drift::DriftKind> {
        self.clients
            .drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(client)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_drift(&self, client: &str, kinds: &[crate::drift::DriftKind]) {
        let mut drift = self.clients.drift.lock().unwrap_or_else(|p| p.into_inner());
        if kinds.is_empty() {
            drift.remove(client);
        } else {
            drift.insert(client.to_string(), kinds.to_vec());
        }
    }

    /// Drops every series of a client that left the config.
    pub fn remove_client(&self, client: &str) {
        self.set_drift(client, &[]);
        self.clients
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(client);
        self.verify_url_ok.remove(&ClientLabel {
            client: client.into(),
        });
    }

    /// OpenMetrics text, whole.
    pub fn encode_openmetrics(&self) -> String {
        self.scrape(true).collect()
    }

    /// Prometheus text format 0.0.4, whole.
    pub fn encode_text(&self) -> String {
        self.scrape(false).collect()
    }

    /// A scrape in pieces, for `/metrics` to send as they are written: whole, a scrape of
    /// 100,000 clients is about 70 MiB, held until the last byte is sent. The per-client
    /// families come last, each a batch of clients at a time (the lock is held for one batch);
    /// a client added during the scrape appears in the next.
    pub fn scrape(&self, openmetrics: bool) -> Scrape {
        let mut head = String::new();
        // Writing into a String cannot fail.
        if openmetrics {
            let _ = prometheus_client::encoding::text::encode_registry(&mut head, &self.registry);
        } else {
            let mut w = Text004::new(&mut head);
            let _ = prometheus_client::encoding::text::encode_registry(&mut w, &self.registry);
            w.finish();
        }
        let names: Vec<Arc<str>> = self
            .clients
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        Scrape {
            states: self.clients.clone(),
            names,
            head: Some(head),
            family: 0,
            at: 0,
            openmetrics,
        }
    }
}

/// A scrape's pieces ([`Metrics::scrape`]): the registry's series, then each per-client family
/// a batch of clients at a time, then (OpenMetrics) `# EOF`.
pub struct Scrape {
    states: Arc<ClientStates>,
    names: Vec<Arc<str>>,
    head: Option<String>,
    family: usize,
    /// The first client of the next batch.
    at: usize,
    openmetrics: bool,
}

impl Iterator for Scrape {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some(head) = self.head.take() {
            return Some(head);
        }
        if self.family == CLIENT_FAMILIES {
            self.family += 1;
            return self.openmetrics.then(|| "# EOF\n".to_string());
        }
        if self.family > CLIENT_FAMILIES {
            return None;
        }
        let end = (self.at + SCRAPE_BATCH).min(self.names.len());
        let batch = &self.names[self.at..end];
        // Sized from what a client of this family took in the last piece: a buffer grown by
        // doubling is copied (and, under the zeroing allocator, wiped) at every step.
        let hint = &self.states.bytes_per_client[self.family];
        let mut out = String::with_capacity(batch.len() * hint.load(Ordering::Relaxed) + 512);
        // A family's HELP and TYPE come with its first batch only.
        if self.at == 0 {
            write_client_family_head(&mut out, self.family, self.openmetrics);
        }
        {
            let records = self
                .states
                .clients
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            write_clients(&records, batch, self.family, &mut out);
        }
        if !batch.is_empty() {
            hint.store(out.len().div_ceil(batch.len()), Ordering::Relaxed);
        }
        self.at = end;
        if self.at >= self.names.len() {
            self.family += 1;
            self.at = 0;
        }
        Some(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families take their `_total`
/// name in `HELP` and `TYPE`, `UNIT` lines and the `# EOF` marker go, and `info` becomes `gauge`.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut w = Text004::new(&mut out);
    let _ = w.write_str(openmetrics);
    w.finish();
    out
}

/// [`to_text_004`] as the encoder writes, line by line, into `out`: a scrape of ten thousand
/// clients is megabytes, and a second copy of it in OpenMetrics would double what a scrape
/// costs in memory and time.
struct Text004<'a> {
    out: &'a mut String,
    line: String,
    /// A `HELP` line waits for its `TYPE` line, which says whether it names a counter.
    help: Option<String>,
}

impl<'a> Text004<'a> {
    fn new(out: &'a mut String) -> Text004<'a> {
        Text004 {
            out,
            line: String::with_capacity(256),
            help: None,
        }
    }

    fn emit(&mut self) {
        // Taken out and put back, so that its buffer serves every line.
        let mut taken = std::mem::take(&mut self.line);
        let line = taken.as_str();
        if line == "# EOF" || line.starts_with("# UNIT ") {
        } else if line.starts_with("# HELP ") {
            self.flush_help();
            self.help = Some(line.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match kind {
                "counter" => {
                    if let Some(help) = self.help.take() {
                        let text = help
                            .strip_prefix("# HELP ")
                            .and_then(|h| h.strip_prefix(name))
                            .and_then(|h| h.strip_prefix(' '));
                        match text {
                            Some(text) => {
                                self.out.push_str("# HELP ");
                                self.out.push_str(name);
                                self.out.push_str("_total ");
                                self.out.push_str(text);
                                self.out.push('\n');
                            }
                            None => {
                                self.out.push_str(&help);
                                self.out.push('\n');
                            }
                        }
                    }
                    self.out.push_str("# TYPE ");
                    self.out.push_str(name);
                    self.out.push_str("_total counter\n");
                }
                "info" => {
                    self.flush_help();
                    self.out.push_str("# TYPE ");
                    self.out.push_str(name);
                    self.out.push_str(" gauge\n");
                }
                _ => {
                    self.flush_help();
                    self.out.push_str(line);
                    self.out.push('\n');
                }
            }
        } else {
            self.flush_help();
            self.out.push_str(line);
            self.out.push('\n');
        }
        taken.clear();
        self.line = taken;
    }

    fn flush_help(&mut self) {
        if let Some(help) = self.help.take() {
            self.out.push_str(&help);
            self.out.push('\n');
        }
    }

    /// Writes what is left (a last line without its newline, a `HELP` without `TYPE`).
    fn finish(mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
        self.flush_help();
    }
}

impl std::fmt::Write for Text004<'_> {
    fn write_str(&mut self, mut s: &str) -> std::fmt::Result {
        while let Some(i) = s.find('\n') {
            self.line.push_str(&s[..i]);
            self.emit();
            s = &s[i + 1..];
        }
        self.line.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-client families through prometheus-client's own encoder, as a scrape wrote them
    /// before [`write_clients`]: what the direct writer must match byte for byte.
    mod reference {
        use super::super::*;
        use prometheus_client::encoding::NoLabelSet;

        #[derive(Debug)]
        struct Families {
            states: Arc<ClientStates>,
            names: Vec<Arc<str>>,
        }

        impl Collector for Families {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                let records = self.states.clients.lock().unwrap();
                let all = || {
                    self.names
                        .iter()
                        .filter_map(|c| Some((&**c, records.get(c)?)))
                };
                let observed = || all().filter_map(|(c, r)| Some((c, r.gauges.as_ref()?)));
                for (family, f) in CLIENT_FAMILY.iter().enumerate() {
                    let kind = if f.counter {
                        MetricType::Counter
                    } else {
                        MetricType::Gauge
                    };
                    let mut e = encoder.encode_descriptor(f.name, f.help, None, kind)?;
                    match family {
                        0 => {
                            for (client, r) in all() {
                                for (result, n) in [
                                    ("success", r.rotations_success),
                                    ("failure", r.rotations_failure),
                                ] {
                                    e.encode_family(&[("client", client), ("result", result)])?
                                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                                }
                            }
                        }
                        1 => {
                            for (client, r) in all() {
                                e.encode_family(&[("client", client)])?
                                    .encode_counter::<NoLabelSet, _, u64>(
                                        &r.orphans_removed,
                                        None,
                                    )?;
                            }
                        }
                        2..=4 => {
                            for (client, g) in observed() {
                                let v =
                                    [g.secret_expiry, g.next_rotation, g.last_rotation][family - 2];
                                if let Some(v) = v {
                                    e.encode_family(&[("client", client)])?.encode_gauge(&v)?;
                                }
                            }
                        }
                        5 => {
                            for (client, g) in observed() {
                                e.encode_family(&[("client", client)])?
                                    .encode_gauge(&i64::from(g.ready))?;
                            }
                        }
                        6 => {
                            for (client, g) in observed() {
                                let ours = g.credentials.iter().filter(|c| c.1).count() as i64;
                                let others = g.credentials.len() as i64 - ours;
                                e.encode_family(&[("client", client), ("owner", "rotator")])?
                                    .encode_gauge(&ours)?;
                                e.encode_family(&[("client", client), ("owner", "other")])?
                                    .encode_gauge(&others)?;
                            }
                        }
                        _ => {
                            for (client, g) in observed() {
                                for (key_id, ours, expiry) in &g.credentials {
                                    let owner = if *ours { "rotator" } else { "other" };
                                    key_id.with_str(|key_id| {
                                        e.encode_family(&[
                                            ("client", client),
                                            ("key_id", key_id),
                                            ("owner", owner),
                                        ])?
                                        .encode_gauge(expiry)
                                    })?;
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
        }

        /// The whole exposition in OpenMetrics, every series through prometheus-client.
        pub fn openmetrics(m: &Metrics) -> String {
            use prometheus_client::encoding::text::encode_registry;
            let mut out = String::new();
            encode_registry(&mut out, &m.registry).unwrap();
            let mut names: Vec<Arc<str>> =
                m.clients.clients.lock().unwrap().keys().cloned().collect();
            names.sort();
            let mut families = Registry::with_prefix("secret_rotator");
            families.register_collector(Box::new(Families {
                states: m.clients.clone(),
                names,
            }));
            encode_registry(&mut out, &families).unwrap();
            out.push_str("# EOF\n");
            out
        }
    }

    /// Holds `m`'s scrape in both formats to prometheus-client's encoding of the same series
    /// (and, for text 0.0.4, to the rewrite of that).
    fn assert_matches_reference(m: &Metrics) {
        let openmetrics = reference::openmetrics(m);
        assert_eq!(m.encode_openmetrics(), openmetrics);
        assert_eq!(m.encode_text(), to_text_004(&openmetrics));
    }

    #[test]
    fn per_client_families_match_the_reference_encoder() {
        let m = Metrics::new();
        // More than a batch, so that a family spans pieces.
        for i in 0..SCRAPE_BATCH + 5 {
            let name = format!("c{i:05}");
            m.register_client(&name);
            match i % 4 {
                0 => {}
                1 => m.set_next_rotation(&name, 1_767_225_600.0 + i as f64),
                2 => m.set_client(
                    &name,
                    &ClientGauges {
                        secret_expiry: Some(1_767_225_600.5),
                        next_rotation: Some(1.0e21),
                        last_rotation: Some(-0.25),
                        ready: true,
                        credentials: vec![
                            ("2f1c6a4e-9b7d-4c1e-8f3a-5d6b7c8e9f01".into(), true, 1.5e9),
                            ("not a guid".into(), false, 0.0),
                        ],
                    },
                ),
                _ => m.set_client_ready(&name, false),
            }
            if i % 7 == 0 {
                m.rotation(&name, true);
                m.rotation(&name, false);
                m.orphan_removed(&name);
            }
        }
        // Label values a config or Graph could hand over that the formats must escape.
        m.set_client(
            "quote\"back\\slash\nnewline é",
            &ClientGauges {
                secret_expiry: Some(f64::MAX),
                next_rotation: Some(f64::MIN_POSITIVE),
                last_rotation: Some(f64::NAN),
                ready: false,
                credentials: vec![(KeyId::Other("k\"\\\n".into()), true, f64::INFINITY)],
            },
        );
        for _ in 0..3 {
            m.rotation("quote\"back\\slash\nnewline é", true);
        }
        m.set_drift("c00001", &[crate::drift::DriftKind::AppDisabled]);
        m.set_verify_url_ok("c00002", true);
        assert_matches_reference(&m);
        assert!(
            m.encode_text().contains(
                "secret_rotator_rotations_total{client=\"quote\\\"back\\\\slash\\nnewline é\",result=\"success\"} 3\n"
            ),
            "the escaped sample"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Any client name, key id, count and float: the direct writer says what
        /// prometheus-client says.
        #[test]
        fn any_client_series_match_the_reference_encoder(
            clients in proptest::collection::vec(
                (
                    "(?s).{0,12}",
                    proptest::num::u64::ANY,
                    proptest::option::of((
                        proptest::option::of(proptest::num::f64::ANY),
                        proptest::option::of(proptest::num::f64::ANY),
                        proptest::bool::ANY,
                        proptest::collection::vec(
                            ("(?s).{0,8}", proptest::bool::ANY, proptest::num::f64::ANY),
                            0..3,
                        ),
                    )),
                ),
                0..6,
            )
        ) {
            let m = Metrics::new();
            for (name, count, gauges) in &clients {
                m.register_client(name);
                m.with_record(name, |r| {
                    r.rotations_success = *count;
                    r.orphans_removed = count / 3;
                });
                if let Some((expiry, next, ready, credentials)) = gauges {
                    m.set_client(
                        name,
                        &ClientGauges {
                            secret_expiry: *expiry,
                            next_rotation: *next,
                            last_rotation: *expiry,
                            ready: *ready,
                            credentials: credentials
                                .iter()
                                .map(|(k, ours, e)| (KeyId::from(k.as_str()), *ours, *e))
                                .collect(),
                        },
                    );
                }
            }
            assert_matches_reference(&m);
        }
    }

    #[test]
    fn text_format_names_counters_by_their_total_series() {
        let m = Metrics::new();
        m.rotation("a", true);
        let text = m.encode_text();
        assert!(
            text.contains("# TYPE secret_rotator_rotations_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP secret_rotator_rotations_total "),
            "{text}"
        );
        assert!(
            text.contains("secret_rotator_rotations_total{client=\"a\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }

    /// A scrape is written a batch of clients at a time: each family still comes once, whole,
    /// with every client, in both formats.
    #[test]
    fn a_scrape_in_batches_has_each_family_once_and_every_client() {
        let m = Metrics::new();
        let n = 2 * SCRAPE_BATCH + 7;
        for i in 0..n {
            let name = format!("c{i:05}");
            m.register_client(&name);
            m.set_next_rotation(&name, i as f64);
        }
        m.rotation("c00003", true);
        for (text, pieces) in [
            (m.encode_text(), m.scrape(false).count()),
            (m.encode_openmetrics(), m.scrape(true).count()),
        ] {
            assert!(pieces > 3 * CLIENT_FAMILIES, "{pieces} pieces");
            let mut seen: Vec<&str> = Vec::new();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let family = line.split(['{', ' ']).next().unwrap();
                if seen.last() != Some(&family) {
                    assert!(!seen.contains(&family), "{family} comes twice");
                    seen.push(family);
                }
            }
            for family in [
                "secret_rotator_rotations",
                "secret_rotator_next_rotation_timestamp_seconds",
            ] {
                let types = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("# TYPE "))
                    .filter(|t| {
                        t.starts_with(&format!("{family} "))
                            || t.starts_with(&format!("{family}_total "))
                    })
                    .count();
                assert_eq!(types, 1, "{family}");
            }
            let samples = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
            assert_eq!(samples("secret_rotator_rotations_total{"), 2 * n);
            assert_eq!(
                samples("secret_rotator_next_rotation_timestamp_seconds{"),
                n
            );
            assert!(text.contains(
                "secret_rotator_rotations_total{client=\"c00003\",result=\"success\"} 1"
            ));
            assert_eq!(
                text.matches("# EOF").count(),
                usize::from(text.ends_with("# EOF\n"))
            );
        }
    }

    /// A scrape lists the clients there when it began: one added meanwhile waits for the next
    /// scrape, one removed meanwhile leaves the families not yet written, and the others are
    /// all there however the records around them changed.
    #[test]
    fn clients_added_or_removed_during_a_scrape() {
        let m = Metrics::new();
        for name in ["a", "c", "e"] {
            m.set_next_rotation(name, 1.0);
        }
        let mut scrape = m.scrape(false);
        let head = scrape.next().unwrap();
        let rotations = scrape.next().unwrap();
        for name in ["a", "c", "e"] {
            assert!(rotations.contains(&format!("{{client=\"{name}\",result=\"success\"}} 0")));
        }
        m.set_next_rotation("b", 1.0);
        m.set_next_rotation("f", 1.0);
        m.remove_client("c");
        // "e" left and came back: a record of its own now, found by name.
        m.remove_client("e");
        m.set_next_rotation("e", 2.0);
        let rest: String = scrape.collect();
        assert!(!rest.contains("client=\"b\""), "{rest}");
        assert!(!rest.contains("client=\"f\""), "{rest}");
        assert!(!rest.contains("client=\"c\""), "{rest}");
        assert!(rest.contains("secret_rotator_orphans_removed_total{client=\"a\"} 0\n"));
        assert!(
            rest.contains("secret_rotator_next_rotation_timestamp_seconds{client=\"a\"} 1.0\n")
        );
        assert!(
            rest.contains("secret_rotator_next_rotation_timestamp_seconds{client=\"e\"} 2.0\n")
        );
        assert!(head.contains("# TYPE secret_rotator_ready gauge"), "{head}");
        assert!(m.encode_text().contains("client=\"b\""));
    }

    #[test]
    fn text_format_is_the_same_however_the_encoder_splits_its_writes() {
        let m = Metrics::new();
        m.rotation("a", true);
        m.register_client("a");
        let openmetrics = m.encode_openmetrics();
        let whole = to_text_004(&openmetrics);
        let mut bytewise = String::new();
        let mut w = Text004::new(&mut bytewise);
        for c in openmetrics.chars() {
            w.write_char(c).unwrap();
        }
        w.finish();
        assert_eq!(bytewise, whole);
        assert_eq!(m.encode_text(), whole);
        assert!(
            whole.contains("# HELP secret_rotator_rotations_total "),
            "{whole}"
        );
        assert!(!whole.contains("# EOF"));
    }

    #[test]
    fn clients_registered_together_start_at_zero_and_keep_what_the_others_counted() {
        let m = Metrics::new();
        m.rotation("b", true);
        m.orphan_removed("b");
        m.set_next_rotation("b", 5.0);
        // A reload that adds "a" and "c" names "b" again: its figures stay.
        m.register_clients(["c", "b", "a"].map(Arc::from));
        let text = m.encode_text();
        for client in ["a", "c"] {
            for line in [
                format!(
                    "secret_rotator_rotations_total{{client=\"{client}\",result=\"success\"}} 0\n"
                ),
                format!("secret_rotator_orphans_removed_total{{client=\"{client}\"}} 0\n"),
            ] {
                assert!(text.contains(&line), "{line} in {text}");
            }
        }
        for line in [
            "secret_rotator_rotations_total{client=\"b\",result=\"success\"} 1\n",
            "secret_rotator_orphans_removed_total{client=\"b\"} 1\n",
            "secret_rotator_next_rotation_timestamp_seconds{client=\"b\"} 5.0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // Written in name order, as one at a time.
        let a = text.find("client=\"a\"").unwrap();
        let b = text.find("client=\"b\"").unwrap();
        let c = text.find("client=\"c\"").unwrap();
        assert!(a < b && b < c, "{text}");
    }

    #[test]
    fn series_of_a_removed_client_disappear() {
        let m = Metrics::new();
        m.register_client("gone");
        m.set_client(
            "gone",
            &ClientGauges {
                secret_expiry: Some(1.0),
                credentials: vec![("k".into(), true, 2.0)],
                ..Default::default()
            },
        );
        assert!(m.encode_text().contains("client=\"gone\""));
        m.remove_client("gone");
        assert!(
            !m.encode_text().contains("client=\"gone\""),
            "{}",
            m.encode_text()
        );
    }

    #[test]
    fn drift_is_exported_while_found_and_goes_with_its_client() {
        use crate::drift::DriftKind;
        let m = Metrics::new();
        m.set_drift("c", &[DriftKind::CredentialGone, DriftKind::AppDisabled]);
        let text = m.encode_text();
        assert!(
            text.contains("secret_rotator_drift{client=\"c\",kind=\"credential_gone\"} 1"),
            "{text}"
        );
        assert!(text.contains("kind=\"app_disabled\""), "{text}");
        m.set_drift("c", &[DriftKind::AppDisabled]);
        assert!(!m.encode_text().contains("credential_gone"));
        m.remove_client("c");
        assert!(!m.encode_text().contains("secret_rotator_drift{"));
    }

    #[test]
    fn credentials_that_vanished_lose_their_series() {
        let m = Metrics::new();
        m.set_client(
            "c",
            &ClientGauges {
                credentials: vec![("k1".into(), true, 2.0), ("k2".into(), false, 3.0)],
                ..Default::default()
            },
        );
        m.set_client(
            "c",
            &ClientGauges {
                credentials: vec![("k2".into(), false, 3.0)],
                ..Default::default()
            },
        );
        let text = m.encode_text();
        assert!(!text.contains("key_id=\"k1\""), "{text}");
        assert!(text.contains("key_id=\"k2\""), "{text}");
    }
}
