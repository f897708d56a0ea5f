//! Listings a run requests as soon as it starts, so that they are in flight together (the rate
//! limiter paces their starts) instead of one after another, each waiting for the one before.

use std::future::Future;

use futures::StreamExt;
use kaiten_client::{Board, CardType, KaitenClient, PropertyDefinition, Space, SpaceId, Tag, User};
use tokio::task::JoinHandle;

use crate::error::SyncError;
use crate::schema::EntityKind;

/// A task aborted when dropped (a run that fails drops what it no longer needs).
pub(super) struct Task<T>(JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    /// Spawns `future`.
    pub(super) fn spawn(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(future))
    }

    /// Its output; a panic in the task is resumed here.
    pub(super) async fn join(mut self) -> Result<T, SyncError> {
        match (&mut self.0).await {
            Ok(output) => Ok(output),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(SyncError::Cancelled),
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Listing<T> = Option<Task<Result<Vec<T>, kaiten_client::Error>>>;

/// Each space's boards (`GET /spaces/{id}/boards`), in the order of `GET /spaces`; `None` when the
/// spaces could not be listed.
pub(super) type SpaceBoards = Option<Vec<(SpaceId, Result<Vec<Board>, kaiten_client::Error>)>>;

/// The listings of the small kinds a run includes, requested when it starts.
#[derive(Default)]
pub(super) struct Prefetched {
    pub(super) spaces: Listing<Space>,
    pub(super) users: Listing<User>,
    pub(super) card_types: Listing<CardType>,
    pub(super) tags: Listing<Tag>,
    pub(super) properties: Listing<PropertyDefinition>,
    /// The boards of every space, requested as soon as the spaces are listed.
    pub(super) boards: Option<Task<SpaceBoards>>,
}

impl Prefetched {
    /// Requests the listing of each of `kinds` that is listed whole with no input from another, and
    /// (when the run covers `every_space`) each space's boards once the spaces are listed.
    pub(super) fn start(client: &KaitenClient, kinds: &[EntityKind], every_space: bool, concurrency: usize) -> Self {
        fn listing<T: Send + 'static, F: Future<Output = Result<Vec<T>, kaiten_client::Error>> + Send + 'static>(
            wanted: bool,
            client: &KaitenClient,
            list: impl FnOnce(KaitenClient) -> F,
        ) -> Listing<T> {
            wanted.then(|| Task::spawn(list(client.clone())))
        }
        let has = |kind| kinds.contains(&kind);
        let (spaces, boards) = if has(EntityKind::Spaces) && every_space && has(EntityKind::Boards) {
            let (tx, rx) = tokio::sync::oneshot::channel::<Vec<SpaceId>>();
            let spaces = Task::spawn({
                let client = client.clone();
                async move {
                    let spaces = client.spaces().await;
                    if let Ok(spaces) = &spaces {
                        let _ = tx.send(spaces.iter().map(|s| s.id).collect());
                    }
                    spaces
                }
            });
            let boards = Task::spawn({
                let client = client.clone();
                async move {
                    let ids = rx.await.ok()?;
                    let lists = futures::stream::iter(ids)
                        .map(|id| {
                            let client = client.clone();
                            async move { (id, client.boards(id).await) }
                        })
                        .buffered(concurrency.max(1));
                    Some(lists.collect::<Vec<_>>().await)
                }
            });
            (Some(spaces), Some(boards))
        } else {
            (listing(has(EntityKind::Spaces), client, |c| async move { c.spaces().await }), None)
        };
        Self {
            spaces,
            boards,
            users: listing(has(EntityKind::Users), client, |c| async move { c.users().await }),
            card_types: listing(has(EntityKind::CardTypes), client, |c| async move { c.card_types().await }),
            tags: listing(has(EntityKind::Tags), client, |c| async move { c.tags().await }),
            properties: listing(has(EntityKind::PropertyDefinitions), client, |c| async move {
                c.property_definitions().await
            }),
        }
    }
}

/// The prefetched listing if there is one, else a request now.
pub(super) async fn take_or<T, F>(prefetched: &mut Listing<T>, request: F) -> Result<Vec<T>, SyncError>
where
    T: Send + 'static,
    F: Future<Output = Result<Vec<T>, kaiten_client::Error>>,
{
    match prefetched.take() {
        Some(task) => Ok(task.join().await??),
        None => Ok(request.await?),
    }
}
