//! The in-process queue's dead letters: moved back in one step under the queue's lock, so
//! there is no moment at which a message is in neither list.

use async_trait::async_trait;

use super::{DeadLetters, RedriveReport};
use crate::error::Result;
use crate::queue::InMemoryQueue;

#[async_trait]
impl DeadLetters for InMemoryQueue {
    async fn redrive(&self, max: u64) -> Result<RedriveReport> {
        let (moved, remaining) =
            self.redrive_dead_letters(usize::try_from(max).unwrap_or(usize::MAX));
        Ok(RedriveReport {
            moved: moved as u64,
            remaining: Some(remaining as u64),
        })
    }
}
