//! worker: takes delivered messages (each carries a whole event), writes them to the sink with
//! the de-duplication key tenant + event id, and records each verdict in the outbox in one
//! batch. The queue does the retrying: the worker only says which messages to retry.

mod consumers;
mod http_trigger;
pub mod memory_trigger;
/// Pulling from Pub/Sub and polling SQS, for a worker no platform triggers (fluxgate-local).
#[cfg(feature = "queue-pull")]
pub mod pubsub_pull;
pub mod pubsub_push;
#[cfg(feature = "queue-pull")]
pub mod sqs_poll;
pub mod sqs_trigger;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lambda_events::event::sqs::SqsEvent;

use fluxgate::config::{ServerConfig, WorkerConfig};
use fluxgate::error::Result;
use fluxgate::event::{Event, EventKey};
use fluxgate::queue::pack;
use fluxgate::runtime::{Function, open_store};
use fluxgate::sink::{self, RowError, RowResult, Sink, SinkConfig, WarehouseRow};
use fluxgate::store::{DatabaseConfig, DeliveryLog, DeliveryOutcome, DeliveryState, OutboxStatus};

pub use consumers::{PulledQueue, consume};
pub use http_trigger::{router, service};

/// The worker's settings, from the environment (each also a flag; `--help` lists them).
#[derive(clap::Parser)]
#[command(about = "Loads delivered events into the warehouse", version)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
    #[command(flatten)]
    pub sink: SinkConfig,
    #[command(flatten)]
    pub server: ServerConfig,
}

/// The worker as a function: on Lambda it takes SQS batches ([`sqs_trigger`]), elsewhere it
/// serves `POST /v1/messages` and the Pub/Sub push endpoint.
pub async fn function(config: Config) -> Result<Function> {
    let store = open_store(&config.database).await?;
    let sink = sink::connect(&config.sink).await?;
    let worker = Worker::new(store, sink, config.worker);
    Ok(
        Function::http(service(worker.clone()), config.server.port).on_lambda_events(
            move |batch: SqsEvent, _| {
                let worker = worker.clone();
                async move { sqs_trigger::handle(&worker, batch).await }
            },
        ),
    )
}

/// One message as a queue hands it over.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub body: Vec<u8>,
    /// 1 on the first delivery (SQS ApproximateReceiveCount, Pub/Sub deliveryAttempt).
    pub receive_count: u32,
}

/// What the queue should do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Handled for good (DONE, or DEAD by a permanent error): delete / acknowledge it.
    Ack,
    /// Deliver it again (FAILED), or let the queue dead-letter it (DEAD at the last receive).
    Retry,
    /// The body is not an event; nothing could be recorded. Each trigger decides (SQS lets it
    /// go to the dead-letter queue, Pub/Sub acknowledges it with a log line).
    Malformed(String),
}

#[derive(Clone)]
pub struct Worker {
    /// Reads where delivered events stand and records the verdicts on them.
    store: Arc<dyn DeliveryLog>,
    sink: Arc<dyn Sink>,
    config: Arc<WorkerConfig>,
    stats: Arc<DeliveryStats>,
}

/// What the worker's triggers saw since the process started (read by tests; the log lines
/// carry the same facts for log-based metrics).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    malformed: AtomicU64,
}

impl DeliveryStats {
    /// Deliveries acknowledged without processing because the envelope or body was malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    pub fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Worker {
    pub fn new(store: Arc<dyn DeliveryLog>, sink: Arc<dyn Sink>, config: WorkerConfig) -> Self {
        Self {
            store,
            sink,
            config: Arc::new(config),
            stats: Arc::default(),
        }
    }

    /// What its triggers counted (shared by every clone of this worker).
    pub fn stats(&self) -> &DeliveryStats {
        &self.stats
    }

    /// Handles a batch and answers for each delivery, in order. A delivery carries one event
    /// or a pack of them ([`fluxgate::queue::pack`]); each event is settled on its own, and a
    /// message is acknowledged once none of its events needs another delivery. `Err` means the
    /// outcomes could not be recorded: retry the whole batch (the sink skips rows it already
    /// holds, and DONE events are not written again).
    pub async fn process(&self, deliveries: &[Delivery]) -> Result<Vec<Verdict>> {
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(deliveries.len());
        // Each event once, with the deliveries that carry it (a redelivered message and a
        // newer one may both hold it): it is written once and its verdict counts for each.
        let mut carried: HashMap<EventKey, (Event, Vec<usize>)> = HashMap::new();
        let mut order: Vec<EventKey> = Vec::new();
        for (i, delivery) in deliveries.iter().enumerate() {
            match pack::read_events(&delivery.body) {
                Ok(events) => {
                    verdicts.push(Verdict::Ack);
                    for event in events {
                        let key = event.key();
                        match carried.get_mut(&key) {
                            Some((_, by)) => by.push(i),
                            None => {
                                order.push(key.clone());
                                carried.insert(key, (event, vec![i]));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(message_id = %delivery.message_id, error = %e, "message body is not an event");
                    verdicts.push(Verdict::Malformed(format!(
                        "message body is not an event: {e}"
                    )));
                }
            }
        }

        // Already in the warehouse: a redelivery. Acknowledge without writing again, so a
        // redelivered message never makes a second row, whatever the sink can de-duplicate.
        let states = self.store.delivery_states(&order).await?;
        let to_write: Vec<&(Event, Vec<usize>)> = order
            .iter()
            .filter(|key| states.get(*key).map(|s| s.status) != Some(OutboxStatus::Done))
            .filter_map(|key| carried.get(key))
            .collect();

        let mut outcomes = Vec::with_capacity(to_write.len());
        if !to_write.is_empty() {
            let results = self.write(&to_write, &states, deliveries).await;
            for ((event, by), result) in to_write.into_iter().zip(results) {
                // The most deliveries any carrier has seen decides whether this was the last.
                let receive_count = by.iter().map(|i| deliveries[*i].receive_count).max();
                let (status, error, retry) = self.judge(receive_count.unwrap_or(1), result);
                if let Some(error) = &error {
                    tracing::warn!(
                        tenant_id = %event.tenant_id,
                        event_id = %event.event_id,
                        receive_count,
                        %status,
                        %error,
                        "event not loaded"
                    );
                }
                if retry {
                    for i in by {
                        verdicts[*i] = Verdict::Retry;
                    }
                }
                outcomes.push(DeliveryOutcome {
                    key: event.key(),
                    status,
                    error,
                });
            }
        }
        self.store
            .record_outcomes(&outcomes, fluxgate::now())
            .await?;
        Ok(verdicts)
    }

    /// Writes the events and answers for each, in order. An event an earlier delivery may
    /// already have written (a redelivered message, or an outbox row that counts attempts:
    /// the crash between the warehouse's commit and recording DONE) is first looked up in the
    /// warehouse ([`Sink::held`]) and skipped when it is there. Only those events are looked
    /// up, so a first delivery costs no extra call.
    async fn write(
        &self,
        to_write: &[&(Event, Vec<usize>)],
        states: &HashMap<EventKey, DeliveryState>,
        deliveries: &[Delivery],
    ) -> Vec<RowResult> {
        let ingested_at = fluxgate::now();
        let rows: Vec<WarehouseRow> = to_write
            .iter()
            .map(|(event, _)| WarehouseRow::new(event, ingested_at))
            .collect();
        let mut results: Vec<Option<RowResult>> = vec![None; rows.len()];
        let maybe_written: Vec<usize> = to_write
            .iter()
            .enumerate()
            .filter(|(_, (event, by))| {
                by.iter().any(|i| deliveries[*i].receive_count > 1)
                    || states
                        .get(&event.key())
                        .is_some_and(DeliveryState::may_be_written)
            })
            .map(|(i, _)| i)
            .collect();
        if !maybe_written.is_empty() {
            let asked: Vec<WarehouseRow> = maybe_written.iter().map(|i| rows[*i].clone()).collect();
            match self.sink.held(&asked).await {
                Ok(held) => {
                    if !held.is_empty() {
                        tracing::info!(
                            held = held.len(),
                            "redelivered events already in the warehouse; not written again"
                        );
                    }
                    for i in maybe_written {
                        if held.contains(&rows[i].key()) {
                            results[i] = Some(Ok(()));
                        }
                    }
                }
                // Not knowing means not writing: a second row is worse than a later retry.
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "warehouse lookup of redelivered events failed");
                    for i in maybe_written {
                        results[i] = Some(Err(RowError::Transient(e.chain())));
                    }
                }
            }
        }

        let pending: Vec<usize> = (0..rows.len()).filter(|i| results[*i].is_none()).collect();
        if !pending.is_empty() {
            let batch: Vec<WarehouseRow> = pending.iter().map(|i| rows[*i].clone()).collect();
            let written: Vec<RowResult> = match self.sink.write_rows(&batch).await {
                Ok(results) => results,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), rows = batch.len(), "sink write failed");
                    vec![Err(RowError::Transient(e.chain())); batch.len()]
                }
            };
            for (i, result) in pending.into_iter().zip(written) {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(RowError::Transient("no answer from the warehouse".into())))
            })
            .collect()
    }

    /// An event's outcome, and whether its message must be delivered again.
    fn judge(&self, receive_count: u32, result: RowResult) -> (OutboxStatus, Option<String>, bool) {
        match result {
            Ok(()) => (OutboxStatus::Done, None, false),
            // The same row would be refused every time: record it and stop delivering it.
            Err(RowError::Permanent(e)) => (OutboxStatus::Dead, Some(e), false),
            // The queue's last delivery: record DEAD now, then let the queue dead-letter it
            // (where replay can find it).
            Err(RowError::Transient(e)) if receive_count >= self.config.max_receive_count => {
                (OutboxStatus::Dead, Some(e), true)
            }
            Err(RowError::Transient(e)) => (OutboxStatus::Failed, Some(e), true),
        }
    }
}

/// Counts verdicts, for log lines and summaries.
pub fn tally(verdicts: &[Verdict]) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for verdict in verdicts {
        let name = match verdict {
            Verdict::Ack => "ack",
            Verdict::Retry => "retry",
            Verdict::Malformed(_) => "malformed",
        };
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}
