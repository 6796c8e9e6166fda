//! An executor for hyper that boxes each future before spawning it on tokio. hyper's
//! HTTP/2 client spawns a task per request whose future is an enum that also has room
//! for a whole connection (kilobytes); unboxed, every request's task is that large, and
//! tokio copies it several times as it spawns the task and again as the task ends.
//! Boxed, the future is copied once and the task holds a pointer.

use std::future::Future;

#[derive(Clone, Copy, Debug, Default)]
pub struct SpawnBoxed;

impl<F> hyper::rt::Executor<F> for SpawnBoxed
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}
