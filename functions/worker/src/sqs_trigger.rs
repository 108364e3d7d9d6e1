//! The worker as an SQS-triggered Lambda function (wired in [`crate::function`]): one [`Worker::process`] call (so one sink
//! write) per SQS batch, answered with an `SqsBatchResponse` that names only the messages to
//! deliver again (the event source mapping's `ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use fluxgate::error::Result;

use crate::{Delivery, Verdict, Worker, tally};

/// SQS counts deliveries in this attribute; the queue's redrive policy dead-letters a message
/// once it exceeds `maxReceiveCount`.
const RECEIVE_COUNT_ATTRIBUTE: &str = "ApproximateReceiveCount";

/// Handles one SQS batch. `Err` (the outcomes could not be recorded) fails the invocation, so
/// SQS delivers the whole batch again; the warehouse rows already written are not written
/// twice (DONE rows are skipped, and the sink de-duplicates by tenant + event id).
pub async fn handle(worker: &Worker, event: SqsEvent) -> Result<SqsBatchResponse> {
    let mut response = SqsBatchResponse::default();
    let mut deliveries = Vec::with_capacity(event.records.len());
    for record in event.records {
        match delivery_of(record) {
            Some(delivery) => deliveries.push(delivery),
            // Without an id the message cannot be named in the answer; SQS never sends one.
            None => tracing::error!("SQS record without a messageId; ignored"),
        }
    }
    let verdicts = worker.process(&deliveries).await?;
    for (delivery, verdict) in deliveries.iter().zip(&verdicts) {
        match verdict {
            Verdict::Ack => {}
            Verdict::Retry => response.add_failure(delivery.message_id.clone()),
            // Reported failed, so SQS delivers it again until the redrive policy moves it to
            // the dead-letter queue, where a person (and replay) can look at it.
            Verdict::Malformed(reason) => {
                tracing::error!(message_id = %delivery.message_id, %reason, "malformed SQS message");
                response.add_failure(delivery.message_id.clone());
            }
        }
    }
    tracing::info!(
        messages = deliveries.len(),
        failed = response.batch_item_failures.len(),
        verdicts = ?tally(&verdicts),
        "SQS batch handled"
    );
    Ok(response)
}

fn delivery_of(record: SqsMessage) -> Option<Delivery> {
    let message_id = record.message_id.filter(|id| !id.is_empty())?;
    let receive_count = record
        .attributes
        .get(RECEIVE_COUNT_ATTRIBUTE)
        .and_then(|count| count.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    Some(Delivery {
        message_id,
        // A record without a body is handed on empty, which the worker judges malformed.
        body: record.body.unwrap_or_default().into_bytes(),
        receive_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, body: Option<&str>, receive_count: Option<&str>) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = Some(id.to_owned());
        record.body = body.map(str::to_owned);
        if let Some(count) = receive_count {
            record
                .attributes
                .insert(RECEIVE_COUNT_ATTRIBUTE.into(), count.into());
        }
        record
    }

    #[test]
    fn a_record_becomes_a_delivery_with_its_receive_count() {
        let delivery = delivery_of(record("m-1", Some("{}"), Some("3"))).expect("delivery");
        assert_eq!(delivery.message_id, "m-1");
        assert_eq!(delivery.body, b"{}");
        assert_eq!(delivery.receive_count, 3);
    }

    #[test]
    fn a_missing_or_odd_receive_count_counts_as_the_first_delivery() {
        assert_eq!(
            delivery_of(record("m", Some("{}"), None))
                .expect("delivery")
                .receive_count,
            1
        );
        assert_eq!(
            delivery_of(record("m", Some("{}"), Some("many")))
                .expect("delivery")
                .receive_count,
            1
        );
    }

    #[test]
    fn a_record_without_an_id_cannot_be_answered_for() {
        let mut nameless = record("", Some("{}"), None);
        assert!(delivery_of(nameless.clone()).is_none());
        nameless.message_id = None;
        assert!(delivery_of(nameless).is_none());
    }
}
