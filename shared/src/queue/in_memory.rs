//! An in-process queue with the semantics of a managed one: a receive hides a message for a
//! visibility timeout, an unacknowledged message comes back, and one received too often goes
//! to a dead-letter list. Messages live in memory only; `Store::requeue_undelivered` covers
//! what a restart forgets.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{PublishResult, Queue, QueueMessage};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct InMemoryQueueConfig {
    /// Messages held at most (ready, delayed and in flight); publishes beyond fail.
    pub capacity: usize,
    pub visibility_timeout: Duration,
    /// Receives after which a message that is not acknowledged is dead-lettered.
    pub max_receive_count: u32,
}

impl Default for InMemoryQueueConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
        }
    }
}

/// A message as the consuming side sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub receipt: u64,
    pub message: QueueMessage,
    /// 1 on the first delivery.
    pub receive_count: u32,
}

#[derive(Debug)]
struct Held {
    message: QueueMessage,
    receive_count: u32,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Held>,
    /// Visible again at the instant; nack'ed or timed out.
    delayed: Vec<(Instant, Held)>,
    in_flight: HashMap<u64, (Instant, Held)>,
    dead_letters: Vec<QueueMessage>,
    next_receipt: u64,
}

impl State {
    fn held(&self) -> usize {
        self.ready.len() + self.delayed.len() + self.in_flight.len()
    }

    /// Moves messages whose delay or visibility timeout has passed back to `ready`.
    fn release_due(&mut self, now: Instant) {
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = waiting;
        self.ready.extend(due.into_iter().map(|(_, held)| held));
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(receipt, _)| *receipt)
            .collect();
        for receipt in expired {
            if let Some((_, held)) = self.in_flight.remove(&receipt) {
                self.ready.push_back(held);
            }
        }
    }
}

pub struct InMemoryQueue {
    config: InMemoryQueueConfig,
    state: Mutex<State>,
    arrived: Notify,
}

impl InMemoryQueue {
    pub fn new(config: InMemoryQueueConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated in a way that
        // matters more than losing it, so recover the guard instead of propagating poison.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes up to `max` visible messages, waiting up to `wait` for the first one.
    pub async fn receive(&self, max: usize, wait: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let batch = self.take(max);
            if !batch.is_empty() {
                return batch;
            }
            let next_visible = self.next_visible();
            let until = next_visible.map_or(deadline, |at| at.min(deadline));
            if Instant::now() >= deadline {
                return Vec::new();
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    fn take(&self, max: usize) -> Vec<Delivery> {
        let now = Instant::now();
        let mut state = self.state();
        state.release_due(now);
        let mut batch = Vec::new();
        while batch.len() < max {
            let Some(mut held) = state.ready.pop_front() else {
                break;
            };
            held.receive_count += 1;
            state.next_receipt += 1;
            let receipt = state.next_receipt;
            batch.push(Delivery {
                receipt,
                message: held.message.clone(),
                receive_count: held.receive_count,
            });
            state
                .in_flight
                .insert(receipt, (now + self.config.visibility_timeout, held));
        }
        batch
    }

    fn next_visible(&self) -> Option<Instant> {
        let state = self.state();
        let delayed = state.delayed.iter().map(|(at, _)| *at);
        let in_flight = state.in_flight.values().map(|(at, _)| *at);
        delayed.chain(in_flight).min()
    }

    /// The message was handled; it is gone.
    pub fn ack(&self, receipt: u64) {
        self.state().in_flight.remove(&receipt);
    }

    /// The message failed; it is visible again after `delay`, or dead-lettered once it has
    /// been received `max_receive_count` times.
    pub fn nack(&self, receipt: u64, delay: Duration) {
        let mut state = self.state();
        if let Some((_, held)) = state.in_flight.remove(&receipt) {
            if held.receive_count >= self.config.max_receive_count {
                state.dead_letters.push(held.message);
            } else {
                state.delayed.push((Instant::now() + delay, held));
            }
        }
        drop(state);
        self.arrived.notify_waiters();
    }

    /// Messages that are waiting or in flight.
    pub fn len(&self) -> usize {
        self.state().held()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dead_letters(&self) -> Vec<QueueMessage> {
        self.state().dead_letters.clone()
    }

    /// Moves up to `max` dead letters, oldest first, back to the ready messages with a fresh
    /// receive count; returns how many moved and how many dead letters remain.
    pub fn redrive_dead_letters(&self, max: usize) -> (usize, usize) {
        let mut state = self.state();
        let count = max.min(state.dead_letters.len());
        let moved: Vec<QueueMessage> = state.dead_letters.drain(..count).collect();
        state.ready.extend(moved.into_iter().map(|message| Held {
            message,
            receive_count: 0,
        }));
        let remaining = state.dead_letters.len();
        drop(state);
        if count > 0 {
            self.arrived.notify_waiters();
        }
        (count, remaining)
    }
}

#[async_trait]
impl Queue for InMemoryQueue {
    fn max_batch(&self) -> usize {
        100
    }

    /// Nothing crosses a wire: packs as large as the drain's caps make them.
    fn max_message_bytes(&self) -> usize {
        usize::MAX
    }

    async fn publish_batch(&self, messages: &[QueueMessage]) -> Result<Vec<PublishResult>> {
        let mut state = self.state();
        let results = messages
            .iter()
            .map(|message| {
                if state.held() >= self.config.capacity {
                    return Err(format!("queue is full ({} messages)", self.config.capacity));
                }
                state.ready.push_back(Held {
                    message: message.clone(),
                    receive_count: 0,
                });
                Ok(())
            })
            .collect();
        drop(state);
        self.arrived.notify_waiters();
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKey;
    use crate::queue::MessageAttributes;

    fn message(id: &str) -> QueueMessage {
        QueueMessage {
            keys: vec![EventKey {
                tenant_id: "t".into(),
                event_id: id.into(),
            }],
            body: b"{}".to_vec(),
            attributes: MessageAttributes {
                tenant_id: "t".into(),
                event_type: "x".into(),
                correlation_id: None,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_messages_come_back_after_the_visibility_timeout() {
        let queue = InMemoryQueue::new(InMemoryQueueConfig {
            visibility_timeout: Duration::from_secs(10),
            ..Default::default()
        });
        queue.publish_batch(&[message("a")]).await.expect("publish");
        let first = queue.receive(10, Duration::ZERO).await;
        assert_eq!(first.len(), 1);
        assert!(queue.receive(10, Duration::from_secs(5)).await.is_empty());
        let again = queue.receive(10, Duration::from_secs(10)).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
        queue.ack(again[0].receipt);
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_failed_max_times_is_dead_lettered() {
        let queue = InMemoryQueue::new(InMemoryQueueConfig {
            max_receive_count: 2,
            ..Default::default()
        });
        queue.publish_batch(&[message("a")]).await.expect("publish");
        for _ in 0..2 {
            let batch = queue.receive(1, Duration::from_secs(5)).await;
            assert_eq!(batch.len(), 1);
            queue.nack(batch[0].receipt, Duration::from_secs(1));
        }
        assert!(queue.is_empty());
        assert_eq!(queue.dead_letters().len(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_each_message_beyond_capacity() {
        let queue = InMemoryQueue::new(InMemoryQueueConfig {
            capacity: 1,
            ..Default::default()
        });
        let results = queue
            .publish_batch(&[message("a"), message("b")])
            .await
            .expect("publish");
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
    }
}
