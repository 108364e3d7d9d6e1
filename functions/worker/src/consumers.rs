//! The shape every queue-reading trigger shares: several consumer loops side by side, so that
//! while one batch waits on the database or the warehouse, others are in flight.

use std::future::Future;

/// Runs `consumers` (at least one) loops made by `consumer` side by side, until all have
/// returned.
pub(crate) async fn side_by_side<F, L>(consumers: usize, consumer: F)
where
    F: Fn() -> L,
    L: Future<Output = ()> + Send + 'static,
{
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..consumers.max(1) {
        loops.spawn(consumer());
    }
    while loops.join_next().await.is_some() {}
}
